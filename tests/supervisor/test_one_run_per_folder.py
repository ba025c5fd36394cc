"""One run per course folder, and one folder per run: two folders named alike get two tmux sessions
(neither adopts nor kills the other's windows), a session is still found by the course's name, and
deleting ``phase5_segments`` mid-run neither lets a second supervisor start (the lock lives outside
the folder) nor leaves the first running on files that are gone (it stops). Two `run --detach` at
the same moment: one starts, the other says it is already running. Real tmux, real workers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.lock import holder
from supervisor.tmux import session_name
from tests.conftest import EXAMPLE_COURSE, copy_course
from worker.paths import CourseLayout

pytestmark = [pytest.mark.tmux, pytest.mark.slow]


def test_two_folders_named_alike_run_at_once(tmp_path: Path, server, p5, started: list) -> None:
    a = copy_course(EXAMPLE_COURSE, tmp_path / "a" / "spa_demo")
    b = copy_course(EXAMPLE_COURSE, tmp_path / "b" / "spa_demo")
    assert session_name(a) != session_name(b) and session_name(a).startswith("phase5-spa_demo-")
    try:
        slow = p5.test_env(PHASE5_TEST_DELAY="0.2")
        runs = [p5.start_run(a, server, env=slow), p5.start_run(b, server, env=slow)]
        started.extend(runs)
        both = {session_name(a), session_name(b)}
        p5.wait_for(lambda: both <= {s.session_name for s in server.sessions}, 30, "both sessions")
        outputs = [run.communicate(timeout=180) for run in runs]
        for run, (out, err) in zip(runs, outputs, strict=True):
            assert run.returncode == 0, out + err
            assert "adopted" not in out and "stray worker" not in out and "result    PASS" in out
        for course in (a, b):
            p5.assert_valid(course)
            assert max(p5.journal_ids(course).values()) == 1
            p5.assert_clean(course, server)
    finally:
        for course in (a, b):
            for proc in p5.course_processes(course):
                proc.kill()


def test_a_session_is_found_by_the_course_name(cleanup_course: Path, server, p5) -> None:
    course = cleanup_course
    env = p5.test_env(PHASE5_TEST_DELAY="0.5")
    result = p5.phase5("run", str(course), *p5.FAST, "--tmux-socket", server.socket_name, "--detach", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    # the README's `tmux attach -t phase5-spa_demo`: tmux takes a unique prefix of a session name
    found = server.cmd("display-message", "-p", "-t", "phase5-spa_demo:", "#{session_name}").stdout
    assert found == [session_name(course)]
    assert p5.phase5("stop", str(course), "--tmux-socket", server.socket_name).returncode == 0
    p5.assert_clean(course, server)


def test_deleting_the_run_folder_mid_run(cleanup_course: Path, server, p5) -> None:
    course = cleanup_course
    layout = CourseLayout(course)
    # slow workers and a long poll: the first supervisor usually next looks at its files when a
    # worker saves a basket, seconds after the deletion, so the second run comes while it still
    # runs and is refused. On a loaded machine the first may notice first and stop, and then the
    # second rightly starts: either way never two supervisors at once. (That the lock outlives the
    # folder is tested deterministically in test_lock.py; tmux resumes a stopped pane process, so
    # the first cannot be frozen here.)
    env = p5.test_env(PHASE5_TEST_DELAY="8")
    slow = ["--poll", "30", "--detach"]
    first = p5.phase5("run", str(course), *p5.FAST, "--tmux-socket", server.socket_name, *slow, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    pid = holder(layout)
    p5.wait_for(lambda: p5.journal_lines(course, 1) >= 3, 60, "saved baskets")
    trash = course.parent / "trash"
    layout.segments_dir.rename(trash)  # rm -rf, at once (the workers go on writing meanwhile)
    shutil.rmtree(trash, ignore_errors=True)
    second = p5.phase5("run", str(course), *p5.FAST, "--tmux-socket", server.socket_name)
    print(second.stderr)
    if second.returncode == 0:  # the first had stopped: its last words come before the second's first
        log = (layout.segments_dir / "supervisor.log").read_text()
        print(log)
        stopped = log.index("phase5_segments: deleted or replaced while the run was going")
        assert "stopping the workers" in log[stopped:]
        assert stopped < log.rindex("supervisor pid "), "the second supervisor started before the first stopped"
        p5.assert_valid(course)
        p5.assert_clean(course, server)
        return
    assert second.returncode == 2 and f"already running (pid {pid})" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    # the first supervisor sees its folder gone at its next poll and stops everything
    p5.wait_for(lambda: holder(layout) is None, 30, "the first supervisor to stop")
    p5.assert_clean(course, server)
    log = (layout.segments_dir / "supervisor.log").read_text()
    print(log)
    assert "phase5_segments: deleted or replaced while the run was going" in log and "stopping the workers" in log
    again = p5.phase5("run", str(course), *p5.FAST, "--tmux-socket", server.socket_name)
    assert again.returncode == 0, again.stdout + again.stderr
    p5.assert_valid(course)
    p5.assert_clean(course, server)


def test_two_detached_runs_at_the_same_moment(tmp_path: Path, server, p5) -> None:
    """Three rounds, each on a fresh copy: exactly one starts; the other exits 2 with the usual
    one line, no traceback."""
    for round_ in range(3):
        course = copy_course(EXAMPLE_COURSE, tmp_path / f"spa_demo_{round_}")
        env = p5.test_env(PHASE5_TEST_DELAY="0.5")
        argv = [sys.executable, "-m", "supervisor.cli", "run", str(course), *p5.FAST]
        argv += ["--tmux-socket", server.socket_name, "--detach"]
        twins = [
            subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)
        ]
        results = [(proc.wait(timeout=60), *proc.communicate()) for proc in twins]
        try:
            codes = sorted(code for code, _, _ in results)
            assert codes == [0, 2], results
            loser = next(err for code, _, err in results if code == 2)
            print(loser.strip())
            assert "already running" in loser and len(loser.strip().splitlines()) == 1 and "Traceback" not in loser
        finally:
            assert p5.phase5("stop", str(course), "--tmux-socket", server.socket_name).returncode == 0
            p5.assert_clean(course, server)
