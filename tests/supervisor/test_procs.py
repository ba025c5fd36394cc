"""Killing process trees with psutil: children first, SIGTERM, grace, SIGKILL for survivors."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from supervisor import procs

# A parent with two children; one child ignores SIGTERM (only SIGKILL ends it).
TREE = """
import os, signal, subprocess, sys, time
stubborn = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(600)")
plain = "import time; print('ready', flush=True); time.sleep(600)"
kids = [subprocess.Popen([sys.executable, "-c", plain], stdout=subprocess.PIPE),
        subprocess.Popen([sys.executable, "-c", stubborn], stdout=subprocess.PIPE)]
for kid in kids:
    kid.stdout.readline()
print(" ".join(str(k.pid) for k in kids), flush=True)
time.sleep(600)
"""


def test_kill_tree_stops_children_and_sigkills_survivors(p5) -> None:
    parent = subprocess.Popen([sys.executable, "-c", TREE, "course-marker"], stdout=subprocess.PIPE, text=True)
    try:
        kids = [psutil.Process(int(pid)) for pid in parent.stdout.readline().split()]
        assert len(kids) == 2 and all(k.is_running() for k in kids)
        began = time.monotonic()
        left = procs.kill_tree(parent.pid, grace=0.5)
        assert left == []
        # the stubborn child outlived the grace period and was SIGKILLed
        assert time.monotonic() - began >= 0.5
        p5.wait_for(lambda: not any(procs.alive(k.pid) for k in [*kids, parent]), 10, "the tree to be gone")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_kill_tree_of_a_stopped_process(p5) -> None:
    """A SIGSTOPped process (a stuck worker, say) is continued so that it can act on SIGTERM."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        proc.send_signal(signal.SIGSTOP)
        p5.wait_for(lambda: psutil.Process(proc.pid).status() == psutil.STATUS_STOPPED, 10, "the stop")
        began = time.monotonic()
        assert procs.kill_tree(proc.pid, grace=5) == []
        assert time.monotonic() - began < 5  # it acted on SIGTERM: no SIGKILL needed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_kill_tree_of_a_gone_pid_is_a_no_op() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert procs.kill_tree(proc.pid) == []
    assert not procs.alive(proc.pid) and not procs.alive(None)


def test_course_processes_finds_workers_by_course_segment_and_orch(tmp_path: Path) -> None:
    course = tmp_path / "spa_demo"
    course.mkdir()
    script = "import time; time.sleep(600)"
    argv = [sys.executable, "-c", script, "worker", str(course), "--segment", "2", "--orch", "3"]
    worker = subprocess.Popen(argv)
    other = subprocess.Popen([sys.executable, "-c", script, "status", str(course)])
    try:
        found = lambda **kw: [p.pid for p in procs.course_processes(course, **kw)]  # noqa: E731
        assert found() == [worker.pid]
        assert found(segment=2) == [worker.pid] and found(segment=2, orch=3) == [worker.pid]
        assert found(segment=1) == [] and found(segment=2, orch=1) == []
        assert sorted(found(words=())) == sorted([worker.pid, other.pid])
    finally:
        for proc in (worker, other):
            proc.kill()
            proc.wait()
