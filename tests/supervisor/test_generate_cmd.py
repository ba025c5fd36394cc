"""``phase5 generate``: a whole course's baskets in one process, written atomically, that
``phase5 validate`` accepts; the backend choice, the API-key check and failures."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from supervisor.cli import main
from supervisor.commands.generate import DEFAULT_OUT_NAME, Progress
from worker.course import Course, LegoContext
from worker.generate import generate_course
from worker.generators import GenerationError
from worker.generators.base import GeneratedBasket
from worker.generators.corpus import CorpusGenerator


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_writes_the_default_file_and_validate_accepts_it(demo_course: Path) -> None:
    result = run("generate", str(demo_course), "--backend", "corpus")
    assert result.exit_code == 0, result.output
    out = demo_course / DEFAULT_OUT_NAME
    baskets = json.loads(out.read_text(encoding="utf-8"))
    course = Course.load(demo_course)
    assert list(baskets) == course.ids  # canonical order
    assert "125/125 baskets" in result.stdout and "in band" in result.stdout
    assert "generate spa_demo (corpus): 125/125" in result.stderr  # plain progress: not a terminal
    checked = run("validate", str(demo_course), str(out))
    assert checked.exit_code == 0, checked.output
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]  # atomic write left nothing


def test_json_summary(demo_course: Path, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "x.json"
    result = run("generate", str(demo_course), "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["backend"] == "corpus" and summary["out"] == str(out)
    assert summary["baskets"] == summary["expected"] == 125
    assert summary["empty_baskets"] >= 1  # LEGO #1 at least
    assert summary["e_phrases"] == sum(len(b["e"]) for b in json.loads(out.read_text()).values())
    assert 0 < summary["band_share"] <= 1 and summary["failed"] == {}
    assert summary["usage"] == {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation_1h_input_tokens": 0,
    }


def test_real_process_generate_then_validate(demo_course: Path, tmp_path: Path) -> None:
    out = tmp_path / "baskets.json"
    env = {k: v for k, v in os.environ.items() if k not in ("PHASE5_BACKEND", "ANTHROPIC_API_KEY")}
    cli = [sys.executable, "-m", "supervisor.cli"]
    done = subprocess.run(
        [*cli, "generate", str(demo_course), "--out", str(out)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "(corpus)" in done.stdout  # the default backend is the offline one
    checked = subprocess.run(
        [*cli, "validate", str(demo_course), str(out)], env=env, capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "PASS" in checked.stdout


def test_backend_from_environment(demo_course: Path, tmp_path: Path) -> None:
    result = run(
        "generate", str(demo_course), "--out", str(tmp_path / "x.json"), "--json", env={"PHASE5_BACKEND": "corpus"}
    )
    assert result.exit_code == 0 and json.loads(result.stdout)["backend"] == "corpus"
    bad = run("generate", str(demo_course), "--out", str(tmp_path / "y.json"), env={"PHASE5_BACKEND": "nope"})
    assert bad.exit_code == 2 and "unknown backend 'nope'" in bad.stderr
    assert not (tmp_path / "y.json").exists()


def test_api_backend_without_key_is_one_line_and_exit_2(demo_course: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    result = run(
        "generate", str(demo_course), "--backend", "anthropic", "--out", str(out), env={"ANTHROPIC_API_KEY": None}
    )  # type: ignore[dict-item]  # None unsets it
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "ANTHROPIC_API_KEY" in result.stderr
    assert not out.exists()


def test_bad_course_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run("generate", str(tmp_path / "nowhere"))
    assert result.exit_code == 2 and result.stderr.startswith("phase5: error:")


def test_threads_give_the_same_baskets_as_one(demo_course: Path) -> None:
    course = Course.load(demo_course)
    one = generate_course(course, CorpusGenerator(course))
    fresh = Course.load(demo_course)  # its index is built by the threads, concurrently
    seen: list[str] = []
    many = generate_course(fresh, CorpusGenerator(fresh), concurrency=4, on_basket=seen.append)
    assert sorted(seen) == sorted(course.ids)
    assert {k: v.basket for k, v in many.baskets.items()} == {k: v.basket for k, v in one.baskets.items()}


class FailingGenerator:
    """The corpus backend, except that some LEGOs fail as an exhausted API backend would."""

    name = "failing"

    def __init__(self, course: Course, fail: set[str]) -> None:
        self.inner, self.fail = CorpusGenerator(course), fail
        self.prefixes: list[int | None] = []

    def generate(self, ctx: LegoContext, prefix_upto: int | None = None) -> GeneratedBasket:
        self.prefixes.append(prefix_upto)
        if ctx.lego.id in self.fail:
            raise GenerationError("out of retries (test)")
        return self.inner.generate(ctx, prefix_upto)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("concurrency", [1, 3])
def test_failures_are_recorded_and_the_rest_generated(demo_course: Path, concurrency: int) -> None:
    course = Course.load(demo_course)
    fail = {course.ids[5], course.ids[40]}
    generator = FailingGenerator(course, fail)
    result = generate_course(course, generator, concurrency=concurrency)
    assert set(result.failed) == fail and result.failed[course.ids[5]] == "out of retries (test)"
    assert set(result.baskets) == set(course.ids) - fail
    summary = result.summary(course)
    assert summary["baskets"] == 123 and list(summary["failed"]) == sorted(fail)
    if concurrency > 1:  # batches pass their first position, as agents do, for prompt caching
        assert set(generator.prefixes) == {course.legos[i].position for i in range(0, 125, 20)}


def test_progress_bar_on_a_terminal_and_plain_lines_otherwise() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Terminal()
    bar = Progress(3, "generate x", stream=tty)
    for _ in range(3):
        bar.advance()
    bar.close()
    assert "3/3" in tty.getvalue()
    plain = io.StringIO()
    lines = Progress(30, "generate x", stream=plain)
    for _ in range(30):
        lines.advance()
    lines.close()
    assert plain.getvalue().splitlines() == [f"generate x: {n}/30" for n in range(0, 31, 3)]


def test_real_course(spa_course: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    result = run("generate", str(spa_course), "--backend", "corpus", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["baskets"] == 1766 and len(json.loads(out.read_text())) == 1766
    checked = run("validate", str(spa_course), str(out), "--json")
    assert checked.exit_code == 0
    report = json.loads(checked.stdout)
    assert report["ok"] and report["gate_phrases_pass"] == report["e_phrases"]
    assert report["d_baskets_pass"] == 1766
    # three seed sentences do not pass GATE at their culminating LEGO (data warnings)
    assert report["culminating_first_pass"] == report["culminating"] - report["culminating_no_seed"] == 521
