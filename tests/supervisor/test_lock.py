"""One supervisor per course: a live holder refuses a second `run` (exit 2), a dead one does not."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.lock import AlreadyRunning, RunLock, holder
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


def test_a_live_holder_blocks_and_is_named(tmp_path: Path) -> None:
    layout = CourseLayout(tmp_path)
    assert holder(layout) is None
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert holder(layout) == proc.pid
        with pytest.raises(AlreadyRunning, match=rf"already running \(pid {proc.pid}\)"):
            RunLock(layout).acquire(wait=0.2)
        # A dead supervisor's lock (SIGKILL: no cleanup at all) does not block the next one.
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert holder(layout) is None
        with RunLock(layout) as lock:
            assert lock.held and holder(layout) is not None
        assert holder(layout) is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_second_run_exits_2_with_the_holders_pid(demo_course: Path, p5) -> None:
    with RunLock(CourseLayout(demo_course)):
        result = p5.phase5("run", str(demo_course), *p5.FAST, "--tmux-socket", "phase5_test_never_started")
        assert result.returncode == 2
        assert f"already running (pid {__import__('os').getpid()})" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        detached = p5.phase5(
            "run", str(demo_course), *p5.FAST, "--detach", "--tmux-socket", "phase5_test_never_started"
        )
        assert detached.returncode == 2 and "already running" in detached.stderr


def test_deleting_the_run_folder_does_not_free_the_course(demo_course: Path, p5) -> None:
    """The lock lives outside ``phase5_segments``: with that folder gone (rm -rf while a run
    goes on), a second `run` is still refused while the holder lives. Deterministic: the holder
    here is this test, which cannot notice the deletion and stop, as a real supervisor does (that
    part: tests/supervisor/test_one_run_per_folder.py)."""
    layout = CourseLayout(demo_course)
    layout.segments_dir.mkdir(exist_ok=True)
    (layout.segments_dir / "supervisor.log").write_text("a run\n")
    with RunLock(layout):
        __import__("shutil").rmtree(layout.segments_dir)
        result = p5.phase5("run", str(demo_course), *p5.FAST, "--tmux-socket", "phase5_test_never_started")
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"already running (pid {__import__('os').getpid()})" in result.stderr
        assert not layout.segments_dir.exists()  # the refused run wrote nothing
