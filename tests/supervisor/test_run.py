"""End to end: `phase5 run` with real workers in a real, isolated tmux server (libtmux's ``server``
fixture) on the example course. After every test: no tmux session of the run and no process of
the run is left (checked with psutil)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from worker.paths import CourseLayout

pytestmark = [pytest.mark.tmux, pytest.mark.slow]

SECRET = "sk-ant-test-supervisor-secret-42"


def orch_states(p5, course: Path) -> dict[str, tuple[str, int]]:
    state = p5.run_state(course)
    return {o.window: (o.state, o.attempts) for s in (state.segments if state else []) for o in s.orchs}


def test_full_run_one_window_per_orchestrator_all_closed(cleanup_course: Path, server, p5) -> None:
    course = cleanup_course
    result = p5.phase5("run", str(course), *p5.FAST, "--tmux-socket", server.socket_name)
    assert result.returncode == 0, result.stdout + result.stderr
    state = p5.run_state(course)
    assert state.state == "done" and state.retries == 0
    windows = [o.window_id for s in state.segments for o in s.orchs]
    names = [o.window for s in state.segments for o in s.orchs]
    assert names == [f"s{s}-o{o}" for s in (1, 2, 3) for o in (1, 2, 3)]
    assert len(set(windows)) == 9 and all(o.attempts == 1 for s in state.segments for o in s.orchs)
    assert [s.state for s in state.segments] == ["merged"] * 3
    assert result.stdout.count("3 windows closed, no process left") == 3
    assert "result    PASS" in result.stdout
    assert state.summary["baskets"] == 125 and state.summary["valid"] and state.summary["coverage"] == 1.0
    p5.assert_valid(course)
    p5.assert_clean(course, server)
    # resume of a finished run: nothing launched, nothing regenerated
    before = p5.journal_ids(course)
    again = p5.phase5("run", str(course), *p5.FAST, "--tmux-socket", server.socket_name)
    assert again.returncode == 0 and "launched" not in again.stdout
    assert p5.journal_ids(course) == before
    p5.assert_clean(course, server)


def test_a_finished_segment_does_not_wait_for_the_next_poll(cleanup_course: Path, server, p5) -> None:
    """Between polls the supervisor looks for finished orchestrators (a few stats every 50 ms):
    with --poll 30 the three segments still end as soon as their files are in, not a poll later
    (which would take at least 90 s)."""
    course = cleanup_course
    started = time.monotonic()
    result = p5.phase5(
        "run",
        str(course),
        "--backend",
        "corpus",
        "--stagger",
        "0",
        "--poll",
        "30",
        "--plain",
        "--tmux-socket",
        server.socket_name,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("3 windows closed, no process left") == 3
    assert elapsed < 30, f"{elapsed:.1f} s"
    p5.assert_clean(course, server)


def test_a_killed_worker_is_relaunched_alone(cleanup_course: Path, server, p5, started: list) -> None:
    course = cleanup_course
    env = p5.test_env(PHASE5_TEST_DELAY="0.6", ANTHROPIC_API_KEY=SECRET)
    run = p5.start_run(course, server, "--segments", "1", env=env)
    started.append(run)
    p5.wait_for(
        lambda: orch_states(p5, course).get("s1-o3", ("",))[0] == "running" and p5.journal_lines(course, 1, 2) > 0,
        60,
        "s1-o2 to have saved a basket",
    )
    state = p5.run_state(course)
    victim = state.segment(1).orch(2)
    assert not CourseLayout(course).orch_baskets(1, 2).exists()
    # the key reached the worker through its environment, and no command line shows it
    assert psutil.Process(victim.pane_pid).environ().get("ANTHROPIC_API_KEY") == SECRET
    for proc in psutil.process_iter(["cmdline"]):
        assert SECRET not in " ".join(proc.info["cmdline"] or [])
    assert not any(SECRET in line for line in server.cmd("list-panes", "-a", "-F", "#{pane_start_command}").stdout)
    # the first window follows the supervisor's log with `tail -F` (no Python process polling files)
    first = server.cmd("list-panes", "-a", "-F", "#{window_name}\t#{pane_start_command}").stdout
    assert any(line.startswith("supervisor\t") and "tail" in line and "supervisor.log" in line for line in first), first
    os.kill(victim.pane_pid, signal.SIGKILL)
    out, err = run.communicate(timeout=90)
    assert run.returncode == 0, out + err
    state = p5.run_state(course)
    relaunched = state.segment(1).orch(2)
    assert relaunched.attempts == 2 and relaunched.exit_statuses[0] == "signal 9"
    assert relaunched.window_id != victim.window_id
    assert state.retries == 1
    assert [o.attempts for o in state.segment(1).orchs] == [1, 2, 1]  # only the failed one was relaunched
    assert max(p5.journal_ids(course).values()) == 1  # no saved basket was made again
    p5.assert_valid(course)
    p5.assert_clean(course, server)


def test_supervisor_killed_then_run_again_adopts_and_regenerates_nothing(
    cleanup_course: Path, server, p5, started: list
) -> None:
    course = cleanup_course
    layout = CourseLayout(course)
    env = p5.test_env(PHASE5_TEST_DELAY="1.0")
    run = p5.start_run(course, server, "--segments", "2", env=env)
    started.append(run)
    p5.wait_for(
        lambda: layout.segment_baskets(1).exists() and p5.journal_lines(course, 2) > 0,
        90,
        "segment 1 merged and segment 2 under way",
    )
    merged_at = layout.segment_baskets(1).stat().st_mtime_ns
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=10)
    workers = {o.window: o.pane_pid for o in p5.run_state(course).segment(2).orchs}
    assert any(psutil.pid_exists(pid) for pid in workers.values())  # the workers outlive their supervisor
    again = p5.phase5("run", str(course), *p5.FAST, "--tmux-socket", server.socket_name, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    state = p5.run_state(course)
    assert state.state == "done"
    seg2 = state.segment(2).orchs
    assert all(o.attempts == 1 for o in seg2)  # adopted or finished meanwhile: never relaunched
    assert "adopted the live window" in again.stdout
    assert layout.segment_baskets(1).stat().st_mtime_ns == merged_at  # a merged segment is not redone
    assert max(p5.journal_ids(course).values()) == 1
    p5.assert_valid(course)
    p5.assert_clean(course, server)


def test_stop_then_run_resumes(cleanup_course: Path, server, p5) -> None:
    course = cleanup_course
    # slow enough that the run is still going when `stop` comes, on a loaded machine too
    env = p5.test_env(PHASE5_TEST_DELAY="1.5")
    detached = p5.phase5(
        "run", str(course), *p5.FAST, "--tmux-socket", server.socket_name, "--segments", "1", "--detach", env=env
    )
    assert detached.returncode == 0, detached.stdout + detached.stderr
    p5.wait_for(lambda: p5.journal_lines(course, 1) > 0, 60, "a saved basket")
    saved = p5.journal_ids(course)
    # attach picks a running orchestrator's window and selects it; without a terminal it says how
    attach = p5.phase5("attach", str(course), "--segment", "1", "--orch", "2")  # socket from the run state
    assert attach.returncode == 2
    assert (
        "window s1-o2" in attach.stderr and f"tmux -L {server.socket_name} attach-session -t phase5-" in attach.stderr
    )
    assert server.cmd("display-message", "-p", "-t", "phase5-spa_demo:", "#{window_name}").stdout == ["s1-o2"]
    stopped = p5.phase5("stop", str(course), "--tmux-socket", server.socket_name)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "supervisor: stopped" in stopped.stdout
    p5.assert_clean(course, server)
    state = p5.run_state(course)
    assert state.state == "stopped" and not CourseLayout(course).final_baskets.exists()
    assert all(p5.journal_ids(course)[i] == 1 for i in saved)  # every saved basket kept
    status = json.loads(p5.phase5("status", str(course), "--json").stdout)
    assert status["state"] == "stopped" and not status["supervisor_alive"]
    again = p5.phase5("run", str(course), *p5.FAST, "--tmux-socket", server.socket_name)
    assert again.returncode == 0, again.stdout + again.stderr
    assert max(p5.journal_ids(course).values()) == 1
    p5.assert_valid(course)
    p5.assert_clean(course, server)


def test_detach_without_a_terminal(cleanup_course: Path, server, p5) -> None:
    course = cleanup_course
    env = {k: v for k, v in p5.test_env().items() if k not in ("TERM", "COLUMNS", "LINES")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "supervisor.cli",
            "run",
            str(course),
            *p5.FAST,
            "--tmux-socket",
            server.socket_name,
            "--segments",
            "1",
            "--detach",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "supervisor started (pid" in result.stdout
    p5.wait_for(
        lambda: (p5.run_state(course) or None) and p5.run_state(course).state == "done",
        90,
        "the detached run to finish",
    )
    p5.assert_valid(course)
    p5.assert_clean(course, server)
    log = (CourseLayout(course).segments_dir / "supervisor.log").read_text()
    assert "final merge" in log and "segment 1 merged" in log
    assert p5.run_state(course).summary["valid"]


def test_a_failing_orchestrator_is_retried_bounded_then_resumed(cleanup_course: Path, server, p5) -> None:
    course = cleanup_course
    from worker.course import Course
    from worker.plan import load_plan, prepare

    prepare(Course.load(course), segments=1)
    bad = load_plan(Course.load(course), 1).orchestrator(1).lego_ids[-1]
    env = p5.test_env(PHASE5_TEST_FAIL_IDS=bad)
    failed = p5.phase5(
        "run",
        str(course),
        *p5.FAST,
        "--tmux-socket",
        server.socket_name,
        "--max-attempts",
        "2",
        "--agent-attempts",
        "1",
        env=env,
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr
    state = p5.run_state(course)
    o1 = state.segment(1).orch(1)
    assert state.state == "failed" and o1.state == "failed" and o1.attempts == 2
    assert o1.exit_statuses == ["1", "1"] and bad in (o1.last_error or "")
    assert [o.state for o in state.segment(1).orchs[1:]] == ["done", "done"]
    # the failed window stays, dead, for a person to read; no process is left
    pane = next(
        p for p in server.cmd("list-panes", "-a", "-F", "#{window_name} #{pane_dead}").stdout if p.startswith("s1-o1")
    )
    assert pane == "s1-o1 1"
    assert p5.wait_for(lambda: not p5.course_processes(course), 20, "no process left")
    # fixed: run again resumes, replacing the dead window
    again = p5.phase5("run", str(course), *p5.FAST, "--tmux-socket", server.socket_name)
    assert again.returncode == 0, again.stdout + again.stderr
    assert p5.run_state(course).segment(1).orch(1).attempts == 3
    assert max(p5.journal_ids(course).values()) == 1
    p5.assert_valid(course)
    p5.assert_clean(course, server)


def test_a_stuck_worker_is_shown_and_restarted(cleanup_course: Path, server, p5) -> None:
    """s1-o1's first launch (a stand-in worker) beats once and goes silent: STUCK, then killed
    and relaunched alone (the relaunch is the real worker). `status` showing STUCK: test_status."""
    course = cleanup_course
    env = p5.test_env(PHASE5_TEST_WORKER=str(Path(__file__).with_name("standin_worker.py")), PHASE5_TEST_HANG="1-1")
    result = p5.phase5(
        "run",
        str(course),
        *p5.FAST,
        "--tmux-socket",
        server.socket_name,
        "--segments",
        "1",
        "--stuck-after",
        "3",
        "--restart-stuck",
        "--grace",
        "1",
        env=env,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "s1-o1: STUCK, no heartbeat for" in out
    state = p5.run_state(course)
    o1 = state.segment(1).orch(1)
    assert o1.attempts == 2 and o1.exit_statuses[0] == "killed (stuck)" and state.retries == 1
    assert [o.attempts for o in state.segment(1).orchs] == [2, 1, 1]
    assert max(p5.journal_ids(course).values()) == 1
    p5.assert_valid(course)
    p5.assert_clean(course, server)


@pytest.mark.parametrize("which", ["all", "first"])
def test_stagger_every_segment_or_only_the_first(cleanup_course: Path, server, p5, which: str) -> None:
    course = cleanup_course
    fast = [a for a in p5.FAST if a not in ("--stagger", "0")]
    result = p5.phase5(
        "run",
        str(course),
        *fast,
        "--stagger",
        "0.4",
        "--stagger-segments",
        which,
        "--segments",
        "2",
        "--tmux-socket",
        server.socket_name,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    state = p5.run_state(course)

    def spread(segment: int) -> float:
        starts = sorted(o.started_at for o in state.segment(segment).orchs)
        return starts[-1] - starts[0]

    assert spread(1) >= 0.8  # 3 windows, 0.4 s apart
    assert (spread(2) >= 0.8) if which == "all" else (spread(2) < 0.4)
    p5.assert_clean(course, server)
