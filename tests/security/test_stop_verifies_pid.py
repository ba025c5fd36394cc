"""``phase5 stop`` signals a pid only once it is verified as this course's supervisor: the pid in
the run's lock file is a claim anyone who can write that file can change."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from supervisor.lock import holder, lock_path, supervisor_process
from tests.conftest import EXAMPLE_COURSE, copy_course
from worker.paths import CourseLayout

HOLD = """
import sys, time
from pathlib import Path
from supervisor.lock import RunLock
from worker.paths import CourseLayout
lock = RunLock(CourseLayout(Path(sys.argv[1])))
lock.acquire()
print("held", flush=True)
time.sleep(600)
"""


def bystander(started: list) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    started.append(proc)
    return proc


def test_a_pid_written_into_the_lock_is_not_signalled(tmp_path: Path, p5, started: list) -> None:
    """The lock is held by something that is not a ``phase5 run`` and its record names an
    unrelated process: stop signals neither."""
    course = copy_course(EXAMPLE_COURSE, tmp_path / "spa_demo")
    layout = CourseLayout(course)
    holding = subprocess.Popen([sys.executable, "-c", HOLD, str(course)], stdout=subprocess.PIPE, text=True)
    started.append(holding)
    assert holding.stdout.readline().strip() == "held"
    victim = bystander(started)
    lock_path(course).write_text(f"{victim.pid}\n")
    assert holder(layout) == victim.pid and supervisor_process(layout) is None
    result = p5.phase5("stop", str(course), "--grace", "1")
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"supervisor: not signalled: the run's lock names pid {victim.pid}" in result.stdout
    assert victim.poll() is None and holding.poll() is None


@pytest.mark.tmux
@pytest.mark.slow
def test_stop_kills_only_this_courses_supervisor(server, tmp_path: Path, p5, started: list) -> None:
    """Two courses run at once; course A's lock record is replaced by course B's supervisor's own
    record (pid, start time, all of it). ``stop A`` stops A's real supervisor (found as the process
    holding A's lock file) and leaves B's run, and a bystander, untouched; B then finishes valid."""
    a = copy_course(EXAMPLE_COURSE, tmp_path / "course_a")
    b = copy_course(EXAMPLE_COURSE, tmp_path / "course_b")
    env = p5.test_env(PHASE5_TEST_DELAY="0.5")
    runs = {}
    for course in (a, b):
        runs[course] = subprocess.Popen(
            [sys.executable, "-m", "supervisor.cli", "run", str(course), *p5.FAST, "--tmux-socket", server.socket_name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        started.append(runs[course])
    try:
        for course in (a, b):
            p5.wait_for(
                lambda c=course: supervisor_process(CourseLayout(c)), 30, "both supervisors to hold their locks"
            )
        victim = bystander(started)
        lock_a, lock_b = lock_path(a), lock_path(b)
        record_b = json.loads(lock_b.read_text())
        assert record_b["pid"] == runs[b].pid
        lock_a.write_text(json.dumps(record_b) + "\n")
        result = p5.phase5("stop", str(a), "--tmux-socket", server.socket_name, "--grace", "2")
        print(result.stdout)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"supervisor: stopped (pid {runs[a].pid})" in result.stdout
        assert runs[a].wait(timeout=30) == 143
        assert psutil.pid_exists(runs[b].pid) and runs[b].poll() is None and victim.poll() is None
        out, err = runs[b].communicate(timeout=120)
        assert runs[b].returncode == 0, out + err
        p5.assert_valid(b)
        p5.wait_for(lambda: not p5.course_processes(a) and not p5.course_processes(b), 20, "both runs to end")
    finally:
        for course in (a, b):
            for proc in p5.course_processes(course):
                proc.kill()
