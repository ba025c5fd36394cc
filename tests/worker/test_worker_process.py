"""Real `phase5 worker` processes on the example course: clean runs, SIGKILL and resume, corrupted
agent files, an agent that keeps failing, SIGTERM, and a second worker on the same orchestrator."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.helpers import assert_complete, journal_ids, start_worker, wait_for
from worker.course import Course
from worker.paths import CourseLayout
from worker.plan import load_plan, prepare

AGENTS = 4


@pytest.fixture
def course(demo_course: Path) -> Course:
    loaded = Course.load(demo_course)
    prepare(loaded, segments=1, orchestrators=1, agents=AGENTS)
    return loaded


def test_clean_run_writes_every_agent_and_the_orchestrator_file(course: Course, procs: list) -> None:
    proc = start_worker(course)
    procs.append(proc)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    layout = CourseLayout(course.root)
    assert len(list(layout.orch_dir(1, 1).glob("agent_*_baskets.json"))) == AGENTS
    assert_complete(course)
    progress = json.loads(layout.orch_progress(1, 1).read_text())
    assert progress["state"] == "done" and progress["done"] == progress["total"] == len(course.legos)
    assert "done" in out  # plain progress lines when stdout is not a terminal
    # Running again changes nothing and generates nothing.
    before = journal_ids(course.root)
    again = start_worker(course)
    procs.append(again)
    again.communicate(timeout=60)
    assert again.returncode == 0 and journal_ids(course.root) == before


def test_sigkill_mid_agent_then_restart_generates_no_saved_basket_twice(course: Course, procs: list) -> None:
    proc = start_worker(course, env={"PHASE5_TEST_DELAY": "0.03"})
    procs.append(proc)
    wait_for(lambda: sum(journal_ids(course.root).values()) >= 20, what="20 saved baskets")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    saved_before = journal_ids(course.root)
    assert 20 <= sum(saved_before.values()) < len(course.legos)

    rerun = start_worker(course)
    procs.append(rerun)
    _, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err
    counts = journal_ids(course.root)
    assert set(counts) == set(course.ids)
    assert max(counts.values()) == 1, [i for i, n in counts.items() if n > 1]
    assert_complete(course)


def test_corrupted_agent_file_is_moved_aside_and_rebuilt_from_the_journal(course: Course, procs: list) -> None:
    first = start_worker(course)
    procs.append(first)
    first.communicate(timeout=60)
    layout = CourseLayout(course.root)
    agent_file = layout.agent_file(1, 1, 2)
    truncated = agent_file.read_text()[:100]  # as by a full disk
    agent_file.write_text(truncated)
    layout.orch_baskets(1, 1).unlink()
    before = journal_ids(course.root)

    rerun = start_worker(course)
    procs.append(rerun)
    _, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err
    aside = list(layout.orch_dir(1, 1).glob("agent_02_baskets.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text() == truncated  # kept, never deleted
    assert journal_ids(course.root) == before  # rebuilt from the journal: nothing generated again
    assert_complete(course)


def test_an_agent_that_keeps_failing_is_retried_alone_and_named(course: Course, procs: list) -> None:
    batch = load_plan(course, 1).orchestrator(1).agent_batches
    failing = batch[1][3]  # in agent 02
    proc = start_worker(course, "--max-attempts", "2", env={"PHASE5_TEST_FAIL_IDS": failing})
    procs.append(proc)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "agent 02 failed after 2 attempts" in out and failing in out
    layout = CourseLayout(course.root)
    assert not layout.orch_baskets(1, 1).exists()
    assert not layout.agent_file(1, 1, 2).exists()
    for other in (1, 3, 4):
        assert layout.agent_file(1, 1, other).exists()
    saved = journal_ids(course.root)
    assert set(batch[1][:3]) <= set(saved) and failing not in saved  # kept what it had made
    progress = json.loads(layout.orch_progress(1, 1).read_text())
    assert progress["state"] == "failed" and progress["agents"][1]["attempts"] == 2

    rerun = start_worker(course)  # the fault is gone: only agent 02's missing baskets are made
    procs.append(rerun)
    rerun.communicate(timeout=60)
    assert rerun.returncode == 0
    assert max(journal_ids(course.root).values()) == 1
    assert_complete(course)


def test_sigterm_stops_promptly_and_keeps_everything(course: Course, procs: list) -> None:
    proc = start_worker(course, env={"PHASE5_TEST_DELAY": "0.2"})
    procs.append(proc)
    wait_for(lambda: sum(journal_ids(course.root).values()) >= 4, what="4 saved baskets")
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=10)
    assert proc.returncode == 128 + signal.SIGTERM
    assert time.monotonic() - sent < 3.0
    progress = json.loads(CourseLayout(course.root).orch_progress(1, 1).read_text())
    assert progress["state"] == "stopped"
    assert sum(journal_ids(course.root).values()) >= 4


def test_a_second_worker_on_the_same_orchestrator_refuses(course: Course, procs: list) -> None:
    first = start_worker(course, env={"PHASE5_TEST_DELAY": "0.2"})
    procs.append(first)
    wait_for(lambda: CourseLayout(course.root).orch_progress(1, 1).exists(), what="first worker's heartbeat")
    second = start_worker(course)
    procs.append(second)
    _, err = second.communicate(timeout=30)
    assert second.returncode == 3
    assert f"pid {first.pid}" in err and len(err.strip().splitlines()) == 1
