"""The Claude backends and d windows without an aligned known side: after the phrases, one short
request asks the model to point out the words of its own translation that render each window;
an answer is kept only as an unbroken piece of that translation (never new text). Against the
fake API, which answers two windows in three with such a piece and the third with text that is
no piece of the translation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from supervisor.cli import main
from worker.course import Course
from worker.generators import GeneratorOptions, make_generator
from worker.report import validate_baskets

KEY = "sk-ant-test-window-fill"


@pytest.fixture
def api(fake_api, demo_course: Path, monkeypatch: pytest.MonkeyPatch):
    server = fake_api(demo_course, "--batch-delay", "0.05")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.delenv("PHASE5_PRICES", raising=False)
    return server


def generate_all(course: Course, fill: bool) -> dict:
    generator = make_generator("anthropic", course, GeneratorOptions(fill_windows=fill, timeout=30))
    try:
        return {lego_id: generator.generate(course.context(lego_id)) for lego_id in course.ids}
    finally:
        generator.close()


def test_the_model_points_out_known_sides_and_only_pieces_are_kept(api, demo_course: Path) -> None:
    course = Course.load(demo_course)
    asked = generate_all(course, fill=True)
    filled = {i: r for i, r in asked.items() if r.d_filled}
    assert filled, "some basket had windows alignment left without a known side"
    for result in filled.values():
        assert any("d window(s) from the model" in note for note in result.notes)
        record = result.journal_record()
        assert record["d_filled"] == result.d_filled and "d_left_out" in record
    # every known side in d, the model's ones included, is a piece of its e-phrase's translation
    for result in asked.values():
        for pairs in result.basket.d.values():
            for target, known in pairs:
                assert any(target in et and known in ek for et, ek in result.basket.e), (result.lego_id, target)
    report = validate_baskets(course, {i: r.basket.to_json() for i, r in asked.items()})
    assert report.ok, [str(p) for p in report.problems[:3]]
    assert report.d_filled == sum(r.d_filled for r in asked.values()) > 0
    assert report.d_known_not_span == 0
    # the fake answers one window in three with text that is no piece: refused, left out
    assert sum(r.d_left_out for r in asked.values()) > 0
    questions = [r for r in api.requests() if r.get("windows")]
    assert len(questions) == sum(1 for r in asked.values() if any("window(s) from the model" in n for n in r.notes))

    left = generate_all(course, fill=False)
    assert sum(r.d_filled for r in left.values()) == 0
    assert sum(r.requests for r in left.values()) == sum(r.requests for r in asked.values()) - len(questions)
    assert sum(r.d_left_out for r in left.values()) > sum(r.d_left_out for r in asked.values())


def test_batches_ask_too_and_d_windows_leave_turns_it_off(api, demo_course: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    reports = {}
    for choice in ("ask", "leave"):
        out = tmp_path / f"{choice}.json"
        args = ["generate", str(demo_course), "--backend", "anthropic-batch", "--poll-interval", "0.05"]
        made = runner.invoke(main, [*args, "--out", str(out), "--d-windows", choice])
        assert made.exit_code == 0, made.output
        checked = runner.invoke(main, ["validate", str(demo_course), str(out), "--json"])
        reports[choice] = json.loads(checked.output)
        assert checked.exit_code == 0, reports[choice]["problems"][:3]
    assert reports["ask"]["d_filled"] > 0 and reports["leave"]["d_filled"] == 0
    assert reports["ask"]["d_known_not_span"] == 0
    assert reports["ask"]["d_left_out"] < reports["leave"]["d_left_out"]
