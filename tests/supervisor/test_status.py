"""`status`, `attach` target choice, `stop` with nothing running, and the file checks, without
running workers: run states and progress files written by hand, live pids borrowed from this test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from supervisor.commands.attach import pick_window
from supervisor.display import STARTUP_GRACE, OrchRow, PlainDisplay, orch_row, silence
from supervisor.state import OrchState, RunState
from worker.atomic import write_json
from worker.checks import orch_file_problem, segment_file_problem
from worker.course import Course
from worker.generators import make_generator
from worker.paths import CourseLayout
from worker.plan import load_plan, prepare
from worker.progress import OrchProgress


@pytest.fixture
def course(demo_course: Path) -> Course:
    loaded = Course.load(demo_course)
    prepare(loaded)
    return loaded


@pytest.fixture
def worker_pid(course: Course):  # type: ignore[no-untyped-def]
    """A live process that names the course on its command line, as a worker does (status trusts
    a saved pid only then)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", "worker", str(course.root.resolve())]
    )
    yield proc.pid
    proc.kill()
    proc.wait()


def progress(pid: int, updated_at: float, done: int = 3) -> dict:
    return {
        "segment": 1,
        "orch": 1,
        "pid": pid,
        "backend": "corpus",
        "state": "running",
        "started_at": updated_at,
        "updated_at": updated_at,
        "total": 14,
        "done": done,
        "rate_per_s": 0.5,
        "eta_s": 22.0,
        "tokens": {"input_tokens": 7},
        "agents": [{"agent": 1, "total": 2, "done": 1, "attempts": 2, "state": "retrying", "last_error": "HTTP 529"}],
        "error": None,
    }


def test_silence_counts_only_the_workers_own_heartbeat() -> None:
    now = 10_000.0
    mine = OrchProgress(segment=1, orch=1, pid=7, updated_at=now - 10)
    assert silence(mine, 7, now - 50, stuck_after=5, now=now) == (True, 10)
    assert silence(mine, 7, now - 50, stuck_after=30, now=now) == (False, 10)
    # an older attempt's file (another pid) does not count; a new worker gets the startup grace
    assert silence(mine, 8, now - 20, stuck_after=5, now=now) == (False, 20)
    assert silence(None, 8, now - STARTUP_GRACE - 1, stuck_after=5, now=now)[0]
    assert silence(None, 8, now - 400, stuck_after=300, now=now) == (True, 400)


def test_rows_show_running_stuck_stopped_and_done(course: Course, worker_pid: int) -> None:
    layout = CourseLayout(course.root)
    plan = load_plan(course, 1)
    now = time.time()
    saved = OrchState(
        segment=1, orch=1, state="running", window_id="@3", pane_pid=worker_pid, attempts=2, started_at=now - 100
    )
    write_json(layout.orch_progress(1, 1), progress(worker_pid, now - 1))
    row = orch_row(layout, plan, 1, saved, stuck_after=30, now=now)
    assert (row.state, row.done, row.total, row.window_id, row.pane_pid, row.attempts) == (
        "running",
        3,
        14,
        "@3",
        worker_pid,
        2,
    )
    assert row.eta_s == 22.0 and row.agents[0]["last_error"] == "HTTP 529" and round(row.elapsed_s) == 100
    write_json(layout.orch_progress(1, 1), progress(worker_pid, now - 60))
    assert orch_row(layout, plan, 1, saved, stuck_after=30, now=now).state == "stuck"
    for pid in (2**22 + 17, os.getpid()):  # no such process; a live process that is not a worker of it
        gone = saved.model_copy(update={"pane_pid": pid})
        assert orch_row(layout, plan, 1, gone, stuck_after=30, now=now).state == "stopped"
    merge_ready = orch_row(layout, plan, 2, None, stuck_after=30, now=now)
    assert merge_ready.state == "pending" and merge_ready.done == 0


def test_status_json_and_text_from_another_terminal(course: Course, worker_pid: int, p5) -> None:
    layout = CourseLayout(course.root)
    now = time.time()
    state = RunState(
        course=str(course.root),
        session="phase5-spa_demo",
        state="running",
        supervisor_pid=1,
        stuck_after=30,
        run_started_at=now - 120,
    )
    seg = state.ensure_segment(1)
    seg.state = "running"
    o1 = seg.ensure_orch(1)
    o1.state, o1.window_id, o1.pane_pid, o1.attempts, o1.started_at = "running", "@5", worker_pid, 1, now - 90
    state.save(layout)
    write_json(layout.orch_progress(1, 1), progress(worker_pid, now - 45))
    result = p5.phase5("status", str(course.root), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    # the supervisor is not running (nobody holds the lock): the run is shown as interrupted
    assert report["state"] == "interrupted" and not report["supervisor_alive"]
    row = report["segments"][0]["orchestrators"][0]
    assert (row["state"], row["window_id"], row["pane_pid"], row["done"]) == ("stuck", "@5", worker_pid, 3)
    assert [s["state"] for s in report["segments"]] == ["running", "pending", "pending"]
    text = p5.phase5("status", str(course.root), "--agents").stdout
    assert "s1-o1 STUCK 3/14" in text and "window @5" in text and "agent 01 retrying 1/2" in text
    assert "interrupted" in text


def test_pick_window_prefers_stuck_then_slowest() -> None:
    def row(orch: int, state: str, done: int, eta: float | None) -> OrchRow:
        return OrchRow(
            segment=1,
            orch=orch,
            window=f"s1-o{orch}",
            state=state,
            total=10,
            done=done,
            eta_s=eta,
            window_id=f"@{orch}",
        )

    rows = [row(1, "running", 5, 10), row(2, "running", 2, 40), row(3, "done", 10, 0)]
    assert pick_window(rows).orch == 2
    assert pick_window([*rows, row(4, "stuck", 9, 1)]).orch == 4
    assert pick_window([row(1, "running", 1, None), row(2, "running", 5, 50)]).orch == 1  # no ETA yet: slowest
    assert pick_window([row(3, "done", 10, 0)]) is None


def test_attach_and_stop_without_a_run(course: Course, p5) -> None:
    attach = p5.phase5("attach", str(course.root), "--tmux-socket", "phase5_test_no_such_server")
    assert attach.returncode == 2 and "no tmux session phase5-spa_demo" in attach.stderr
    stop = p5.phase5("stop", str(course.root), "--tmux-socket", "phase5_test_no_such_server")
    assert stop.returncode == 0 and "supervisor: not running" in stop.stdout


def test_orch_and_segment_file_checks(course: Course) -> None:
    layout = CourseLayout(course.root)
    assert orch_file_problem(course, 1, 1) == "missing"
    ids = load_plan(course, 1).orchestrator(1).lego_ids
    generator = make_generator("corpus", course)
    baskets = {i: generator.generate(course.context(i)).basket.to_json() for i in ids}
    write_json(layout.orch_baskets(1, 1), baskets)
    assert orch_file_problem(course, 1, 1) is None
    write_json(layout.orch_baskets(1, 1), {**baskets, ids[0]: {**baskets[ids[0]], "e": [["xyz", "xyz"]]}})
    assert "gate" in orch_file_problem(course, 1, 1)
    write_json(layout.orch_baskets(1, 1), {i: baskets[i] for i in ids[1:]})
    assert orch_file_problem(course, 1, 1) == f"{ids[0]}: missing"
    layout.orch_baskets(1, 1).write_text("{not json")
    assert "not valid JSON" in orch_file_problem(course, 1, 1)
    assert segment_file_problem(course, 1) == "missing"


def test_plain_display_prints_events_and_changes(capsys) -> None:
    display = PlainDisplay(every=3600)
    rows = [OrchRow(segment=1, orch=1, window="s1-o1", state="running", total=4, done=1, eta_s=5)]
    display.event("s1-o1: launched")
    display.rows("segment 1/3", rows)
    display.rows("segment 1/3", rows)  # unchanged: not printed again
    display.rows("segment 1/3", [OrchRow(segment=1, orch=1, window="s1-o1", state="stuck", total=4, done=1)])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[1].endswith("segment 1/3: s1-o1 running 1/4 eta 0:05")
    assert lines[2].endswith("s1-o1 STUCK 1/4 eta -")
