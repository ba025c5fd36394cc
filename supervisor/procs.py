"""Process trees (psutil): kill a pane's whole tree, find what is left of a run.

Pane processes are children of the tmux server, not of the supervisor, so everything here works
on pids with psutil (which guards against pid reuse) rather than on ``subprocess`` handles.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import psutil

DEFAULT_GRACE = 5.0
FORK_SERVER_MODULE = "supervisor.forkserver"  # in the command line of a fork server and its workers
WAIT_FIRST_STEP = 0.01  # seconds of the first wait for killed processes to end (doubling to 0.1)


def tree(pid: int) -> list[psutil.Process]:
    """``pid`` and its descendants, deepest first (children are stopped before their parent)."""
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return []
    try:
        children = root.children(recursive=True)
    except psutil.Error:
        children = []
    return [*reversed(children), root]


def kill_tree(pid: int, grace: float = DEFAULT_GRACE) -> list[psutil.Process]:
    """Stop ``pid`` and all its descendants: SIGTERM children first, then the root; wait up to
    ``grace`` seconds; SIGKILL the survivors. Returns the processes that still live (normally none).

    Never signals the calling process itself (the supervisor may sit in a pane it cleans up).
    """
    procs = [p for p in tree(pid) if p.pid != os.getpid()]
    return kill_processes(procs, grace)


def kill_processes(procs: list[psutil.Process], grace: float = DEFAULT_GRACE) -> list[psutil.Process]:
    """SIGTERM each of ``procs`` in order, wait up to ``grace`` s, SIGKILL survivors; return the
    ones that are still alive after that (normally none)."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
            # A stopped process (SIGSTOP, ^Z) only acts on SIGTERM once it runs again.
            proc.send_signal(signal.SIGCONT)
    alive = _wait(procs, grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return _wait(alive, grace)


def _wait(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """psutil.wait_procs, except that a zombie counts as gone: it has exited, and reaping it is its
    parent's business (tmux 3.3a sometimes reaps a pane's process only at its next SIGCHLD)."""
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if _running(p)]
    step = WAIT_FIRST_STEP
    while alive:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        # Short first looks: a pane's process usually ends at once on SIGTERM but stays a zombie
        # until tmux reaps it, which wait_procs (it waits for the pid to vanish) would sit out
        # in full; segment ends and the run's end wait here.
        _, alive = psutil.wait_procs(alive, timeout=min(step, remaining))
        alive = [p for p in alive if _running(p)]
        step = min(step * 2, 0.1)
    return alive


def _running(proc: psutil.Process) -> bool:
    """Alive and not a zombie (a zombie holds no resources; its parent reaps it)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def alive(pid: int | None) -> bool:
    """Is ``pid`` a running (non-zombie) process?"""
    if not pid:
        return False
    try:
        return _running(psutil.Process(pid))
    except psutil.Error:
        return False


def names_course(pid: int | None, course_root: Path) -> bool:
    """Is ``pid`` a live process whose command line names ``course_root``? A pid from a saved
    state may belong to anything by now (a reboot, pid reuse): never signal it on trust."""
    if not alive(pid):
        return False
    root = str(Path(course_root).resolve())
    try:
        return any(arg.rstrip("/") == root for arg in psutil.Process(pid).cmdline())
    except psutil.Error:
        return False


def course_processes(
    course_root: Path, segment: int | None = None, orch: int | None = None, words: tuple[str, ...] = ("worker",)
) -> list[psutil.Process]:
    """Processes (other than this one) whose command line names ``course_root`` and all of
    ``words``; with ``segment``/``orch``, only workers of that segment/orchestrator.

    This is how the supervisor checks that nothing of a segment is left, and how ``stop`` finds
    workers that lost their window. Pass ``words=()`` for every process that names the course.
    """
    root = str(Path(course_root).resolve())
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.pid == os.getpid() or not cmdline or not _running(proc):
            continue
        if not any(arg == root or arg.rstrip("/") == root for arg in cmdline):
            continue
        if any(word not in cmdline for word in words):
            continue
        if segment is not None and not _has_option(cmdline, "--segment", segment):
            continue
        if orch is not None and not _has_option(cmdline, "--orch", orch):
            continue
        found.append(proc)
    return found


def forked_processes(course_root: Path) -> list[psutil.Process]:
    """The warm-start fork servers of the course and the workers they forked (which keep the
    server's command line): a killed supervisor's forked workers are found here, not by
    :func:`course_processes`, since their command line does not say ``worker``."""
    return course_processes(course_root, words=(FORK_SERVER_MODULE,))


def _has_option(cmdline: list[str], name: str, value: int) -> bool:
    for index, arg in enumerate(cmdline):
        if arg == name and index + 1 < len(cmdline) and cmdline[index + 1] == str(value):
            return True
        if arg == f"{name}={value}":
            return True
    return False
