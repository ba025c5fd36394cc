"""`phase5 redo` end to end: real supervisor, real workers in an isolated tmux server (libtmux's
``server`` fixture), the real SDK against the fake API. A redo regenerates only the chosen
baskets, records them in its journals (backend, model, time, redo), leaves every other basket of
lego_baskets.json unchanged byte for byte, resumes after a crash, and `phase5 cost` adds it up."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import finish_offline, others_unchanged
from worker.atomic import Journal
from worker.course import Course
from worker.paths import CourseLayout
from worker.report import load_basket_file, validate_baskets

pytestmark = [pytest.mark.tmux, pytest.mark.slow]

KEY = "test-key"
#: The fake API reads the example course in the checkout (a server naming the test's copy would
#: count as a process of the run).
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "courses" / "spa_demo"
MODEL = "claude-sonnet-5"


def redo_records(course: Path, segment: int) -> list[dict]:
    folder = CourseLayout(course).segment_dir(segment)
    return [r for path in sorted(folder.rglob("agent_*_journal.jsonl")) for r in Journal(path).records()]


def flagged_ids(course: Path, flag: str) -> list[str]:
    loaded = Course.load(course)
    baskets, _ = load_basket_file(CourseLayout(course).final_baskets)
    report = validate_baskets(loaded, baskets)
    return [i for i in loaded.ids if flag in report.baskets[i].flags]


def test_redo_where_empty_regenerates_only_those_and_keeps_every_other_basket(cleanup_course: Path, server, p5) -> None:
    course = cleanup_course
    socket = ["--tmux-socket", server.socket_name]
    first = p5.phase5("run", str(course), *p5.FAST, *socket)
    assert first.returncode == 0, first.stdout + first.stderr
    final = CourseLayout(course).final_baskets
    before = final.read_text(encoding="utf-8")
    empty = flagged_ids(course, "empty")
    assert empty

    dry = p5.phase5("redo", str(course), "--where", "empty", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"redo {len(empty)} baskets" in dry.stdout and "offline, no cost" in dry.stdout
    assert not CourseLayout(course).segment_plan(4).exists()  # a dry run writes nothing

    redo = p5.phase5("redo", str(course), "--where", "empty", *p5.FAST, *socket)
    assert redo.returncode == 0, redo.stdout + redo.stderr
    assert f"redo 1 applied: {len(empty)} baskets into lego_baskets.json" in redo.stdout
    records = redo_records(course, 4)  # the redo is segment 4, after the plan's three
    assert sorted(r["id"] for r in records) == sorted(empty)  # those baskets, each once, nothing else
    assert all(r["redo"] == 1 and r["backend"] == "corpus" and r["time"] >= r["started"] for r in records)
    after = final.read_text(encoding="utf-8")
    others_unchanged(before, after, set(empty))
    state = p5.run_state(course)
    assert state.get_segment(4).state == "merged" and state.summary["redo"] == 1
    assert state.summary["baskets"] == len(empty) and state.summary["kept"] == 125 - len(empty)
    p5.assert_valid(course)
    p5.assert_clean(course, server)

    # the run again: nothing launched, and the final merge keeps the redo's baskets
    again = p5.phase5("run", str(course), *p5.FAST, *socket)
    assert again.returncode == 0 and "launched" not in again.stdout
    assert final.read_text(encoding="utf-8") == after
    status = json.loads(p5.phase5("status", str(course), "--json").stdout)
    assert [(s["segment"], s["redo"], s["state"]) for s in status["segments"]][-1] == (4, 1, "merged")
    p5.assert_clean(course, server)


def test_redo_with_anthropic_against_the_fake_api_records_its_cost(cleanup_course: Path, server, p5, fake_api) -> None:
    course = cleanup_course
    finish_offline(course)
    ids = Course.load(course).ids[40:46]
    api = fake_api(EXAMPLE, "--latency", "0.01")
    env = p5.test_env(ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=api.base_url)
    args = ["--ids", ",".join(ids), "--backend", "anthropic", "--model", MODEL, "--orchestrators", "2"]

    dry = p5.phase5("redo", str(course), *args, "--dry-run", "--json", env=env)
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["baskets"] == 6 and plan["ids"] == ids and plan["estimate"]["backends"]["anthropic"]["cost_usd"]
    assert not api.requests()  # the estimate calls no API

    before = CourseLayout(course).final_baskets.read_text(encoding="utf-8")
    redo = p5.phase5(
        "redo", str(course), *args, *p5.FAST[2:], "--tmux-socket", server.socket_name, env=env, timeout=120
    )
    assert redo.returncode == 0, redo.stdout + redo.stderr
    others_unchanged(before, CourseLayout(course).final_baskets.read_text(encoding="utf-8"), set(ids))
    records = redo_records(course, 2)
    assert sorted(r["id"] for r in records) == sorted(ids)
    assert {(r["backend"], r["model"], r["redo"]) for r in records} == {("anthropic", MODEL, 1)}

    cost = json.loads(p5.phase5("cost", str(course), "--json").stdout)
    redo_segment = cost["segments"][-1]
    assert redo_segment["redo"] == 1 and redo_segment["baskets"] == 6 and redo_segment["cost_usd"] > 0
    assert cost["run"]["cost_usd"] == pytest.approx(redo_segment["cost_usd"])  # the offline run was free
    text = p5.phase5("cost", str(course)).stdout
    assert "redo 1 (s2)" in text

    shown = json.loads(p5.phase5("show", str(course), ids[1], "--json").stdout)
    current = [m for m in shown["made"] if m["current"]]
    assert [m["backend"] for m in shown["made"]] == ["corpus", "anthropic"]
    assert current[0]["redo"] == 1 and current[0]["model"] == MODEL and current[0]["requests"] >= 1
    p5.assert_clean(course, server)


def test_a_crashed_redo_resumes_and_a_new_one_waits(cleanup_course: Path, server, p5, started: list) -> None:
    course = cleanup_course
    finish_offline(course)
    ids = Course.load(course).ids[10:40]
    socket = ["--tmux-socket", server.socket_name]
    env = p5.test_env(PHASE5_TEST_DELAY="0.25")
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "supervisor.cli", "redo", str(course), "--ids", ",".join(ids), *p5.FAST, *socket],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    started.append(supervisor)
    p5.wait_for(lambda: len(redo_records(course, 2)) >= 5, 60, "5 baskets of the redo saved")
    supervisor.send_signal(signal.SIGKILL)  # a crash: its windows live on
    supervisor.wait(timeout=10)

    other = p5.phase5("redo", str(course), "--where", "short", *socket)
    assert other.returncode == 2 and "is unfinished; finish it first" in other.stderr
    assert "--resume" in other.stderr and len(other.stderr.strip().splitlines()) == 1

    resumed = p5.phase5("redo", str(course), "--resume", *p5.FAST, *socket, env=env, timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming redo 1" in resumed.stdout
    records = redo_records(course, 2)
    assert sorted(r["id"] for r in records) == sorted(ids)  # every basket once: nothing saved made again
    state = p5.run_state(course)
    assert state.summary["redo"] == 1 and state.get_segment(2).state == "merged"
    none = p5.phase5("redo", str(course), "--resume", *socket)
    assert none.returncode == 2 and "no unfinished redo" in none.stderr
    p5.assert_clean(course, server)


def test_bad_requests_get_one_line_and_change_nothing(demo_course: Path, p5) -> None:
    early = p5.phase5("redo", str(demo_course), "--where", "empty")
    assert early.returncode == 2 and "finish the run first" in early.stderr
    finish_offline(demo_course)
    plans = sorted(p.name for p in CourseLayout(demo_course).plan_files())
    for args, needle in (
        ((), "exactly one of --where, --ids, --ids-file or --resume"),
        (("--where", "empty", "--ids", "S0001L01"), "exactly one of"),
        (("--ids", "S9999L01"), "S9999L01 is not a LEGO of this course"),
        (("--ids", "S0001L01;rm -rf"), "is not a LEGO id like S0001L01"),
        (("--ids-file", str(demo_course / "nope.txt")), "nope.txt"),
        (("--where", "nonsense"), "nonsense"),
        (("--where", "empty", "--backend", "anthropic"), "ANTHROPIC_API_KEY"),
    ):
        result = p5.phase5("redo", str(demo_course), *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert needle in result.stderr, (args, result.stderr)
    assert sorted(p.name for p in CourseLayout(demo_course).plan_files()) == plans


def test_redo_where_empty_on_the_full_course(spa_course: Path, server, p5) -> None:
    """The issue's test: the full Spanish course after an offline run; `redo --where empty`
    regenerates exactly the empty baskets and leaves every other one unchanged byte for byte."""
    socket = ["--tmux-socket", server.socket_name]
    try:
        first = p5.phase5("run", str(spa_course), *p5.FAST, *socket, timeout=300)
        assert first.returncode == 0, first.stdout + first.stderr
        before = CourseLayout(spa_course).final_baskets.read_text(encoding="utf-8")
        empty = flagged_ids(spa_course, "empty")
        redo = p5.phase5("redo", str(spa_course), "--where", "empty", *p5.FAST, *socket, timeout=300)
        assert redo.returncode == 0, redo.stdout + redo.stderr
        assert sorted(r["id"] for r in redo_records(spa_course, 4)) == sorted(empty)
        others_unchanged(before, CourseLayout(spa_course).final_baskets.read_text(encoding="utf-8"), set(empty))
        assert f"({len(empty)} changed" in redo.stdout or f"{1766 - len(empty)} others unchanged" in redo.stdout
    finally:
        p5.assert_clean(spa_course, server)
