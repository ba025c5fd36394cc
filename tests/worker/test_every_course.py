"""Every backend on every course shape (tests/fixtures/courses and the example course): the
baskets pass validate, a culminating basket opens with its seed sentence exactly as written (or
has none, when that sentence does not pass GATE there), every corpus e-phrase is a span of one
seed pair as written, d-phrases are spans of their e-phrase, and text written without spaces
gets none. The Claude backends run against the fake API through the real SDK."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from supervisor.cli import main
from worker.course import Course

ROOT = Path(__file__).resolve().parents[2]
COURSES = {
    **{p.name: p for p in sorted((ROOT / "tests" / "fixtures" / "courses").iterdir())},
    "spa_demo": ROOT / "examples" / "courses" / "spa_demo",
}
BACKENDS = ("corpus", "anthropic", "anthropic-batch")
KEY = "sk-ant-test-every-course"


def glued_seed_sentences(course: Course) -> set[str]:
    """Each seed's LEGO texts joined as the old code glued them, where that is not the sentence."""
    glued = set()
    for seed in course.source.seeds:
        for sep in (" ", ""):
            joined = sep.join(lego.target for lego in seed.legos)
            if joined.strip(".。?？ ") != seed.target.strip(".。?？ "):
                glued.add(joined)
    return glued


def check_baskets(course: Course, baskets: dict[str, Any], backend: str) -> int:
    """The rules of the issue, as a bilingual reader would check them; returns e-phrases seen."""
    seeds = [(seed.target, seed.known) for seed in course.source.seeds]
    glued = glued_seed_sentences(course)
    seen = 0
    for lego in course.legos:
        basket = baskets[lego.id]
        e = [tuple(pair) for pair in basket["e"]]
        if lego.culminating:
            seed = course.seed_phrase(lego.seed_id)
            sentence = course.seeds_by_id[lego.seed_id]
            if seed is not None:
                assert e and e[0] == (sentence.target, sentence.known), (lego.id, e[:1])
            else:
                assert not e or e[0][0] != sentence.target, lego.id
        for target, known in e:
            seen += 1
            assert target not in glued, (lego.id, target)
            if backend == "corpus":
                assert any(target in t and known in k for t, k in seeds), (lego.id, target, known)
            if not course.spaced:
                assert " " not in target, (lego.id, target)
        for size, pairs in basket["d"].items():
            for target, known in pairs:
                source = [(t, k) for t, k in e if target in t]
                assert source, (lego.id, size, target)  # cut from an e-phrase as written
                assert any(known in k for _, k in source), (lego.id, size, target, known)
                if not course.spaced:
                    assert " " not in target
    return seen


@pytest.fixture(params=sorted(COURSES))
def course_copy(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    return Path(shutil.copytree(COURSES[request.param], tmp_path / request.param))


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_on_every_course(
    course_copy: Path, backend: str, fake_api, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PHASE5_PRICES", raising=False)
    if backend != "corpus":
        server = fake_api(course_copy, "--batch-delay", "0.05")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    out = tmp_path / "baskets.json"
    runner = CliRunner()
    args = ["generate", str(course_copy), "--backend", backend, "--out", str(out), "--json", "--poll-interval", "0.05"]
    made = runner.invoke(main, args)
    assert made.exit_code == 0, made.output
    checked = runner.invoke(main, ["validate", str(course_copy), str(out), "--json"])
    report = json.loads(checked.output)
    assert checked.exit_code == 0 and report["ok"], report["problems"][:3]
    course = Course.load(course_copy)
    assert report["languages"]["description"] == course.description
    assert report["doubled_e"] == report["doubled_d"] == report["capitals_e"] == report["capitals_d"] == 0
    assert check_baskets(course, json.loads(out.read_text(encoding="utf-8")), backend) > 0
