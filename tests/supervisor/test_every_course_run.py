"""`phase5 run` on every course shape of tests/fixtures/courses, offline and with the Claude
backend against the fake API: real tmux windows, real workers. The run ends valid, names the
course's languages in words, puts no space into text written without spaces, holds no LEGO
texts glued into a sentence, and leaves no process or tmux session behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from worker.course import Course
from worker.paths import CourseLayout

pytestmark = [pytest.mark.tmux, pytest.mark.slow]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "courses"
KEY = "sk-ant-test-every-course-run"
RUN = ["--stagger", "0", "--poll", "0.2", "--plain", "--segments", "2", "--orchestrators", "2", "--agents", "3"]


@pytest.mark.parametrize("backend", ["corpus", "anthropic"])
@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.iterdir()))
def test_run_every_course_shape(name: str, backend: str, tmp_path: Path, server, p5, fake_api) -> None:
    course = Path(shutil.copytree(FIXTURES / name, tmp_path / name))
    loaded = Course.load(course)
    env, api = p5.test_env(), None
    if backend == "anthropic":
        api = fake_api(course, "--latency", "0.01")
        env = p5.test_env(ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=api.base_url)
    try:
        result = p5.phase5(
            "run", str(course), "--backend", backend, *RUN, "--tmux-socket", server.socket_name, env=env, timeout=120
        )
        assert result.returncode == 0, result.stdout + result.stderr
        log = (CourseLayout(course).segments_dir / "supervisor.log").read_text(encoding="utf-8")
        assert f"({loaded.description})" in log  # "Mandarin Chinese for English speakers"
        checked = p5.phase5("validate", str(course), "--json")
        report = json.loads(checked.stdout)
        assert checked.returncode == 0 and report["ok"] and report["coverage"] == 1.0
        assert report["languages"]["description"] == loaded.description
        assert report["doubled_e"] == report["capitals_e"] == report["doubled_d"] == report["capitals_d"] == 0
        baskets = json.loads(CourseLayout(course).final_baskets.read_text(encoding="utf-8"))
        for lego in loaded.legos:
            e = baskets[lego.id]["e"]
            seed = loaded.seed_phrase(lego.seed_id) if lego.culminating else None
            if seed is not None:
                assert e[0] == list(seed), lego.id  # the seed sentence exactly as written
            for target, _known in e:
                assert loaded.spaced or " " not in target, (lego.id, target)
                assert any(target in s.target for s in loaded.source.seeds), (lego.id, target)  # never glued
    finally:
        if api is not None:
            api.stop()  # its command line names the course too
        try:
            p5.assert_clean(course, server)
        finally:
            for proc in p5.course_processes(course):  # a failed run must not leave workers behind
                proc.kill()
