"""Ending what a run started: whole process trees (children first, SIGTERM, a grace period,
SIGKILL: :mod:`supervisor.procs`), then windows, then the session; and finding what is left of a
segment (a worker without a window, a forked worker of the warm-start server). Used by the
supervisor at each segment's end, at the run's end and when it is stopped, and by ``phase5 stop``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import psutil

from supervisor import procs
from supervisor.forkserver import ForkServer
from supervisor.tmux import CourseSession, PaneInfo
from worker.errors import Phase5Error
from worker.paths import CourseLayout
from worker.progress import read_progress

ORCH_WINDOW = re.compile(r"^s(\d+)-o(\d+)$")


def segment_of(window_name: str) -> int | None:
    """The segment of an orchestrator's window (``s2-o3``: 2), None for other windows.

    >>> segment_of("s2-o3"), segment_of("supervisor")
    (2, None)
    """
    match = ORCH_WINDOW.match(window_name)
    return int(match.group(1)) if match else None


def trees(pids: Iterable[int | None]) -> list[psutil.Process]:
    """The live processes of these pids and their descendants, deepest first, each once, never
    this process (a supervisor may sit in a pane it cleans up)."""
    seen: dict[int, psutil.Process] = {}
    for pid in pids:
        if pid and procs.alive(pid):
            for proc in procs.tree(pid):
                seen.setdefault(proc.pid, proc)
    seen.pop(os.getpid(), None)
    return list(seen.values())


class Teardown:
    """Ends a course's processes and windows; anything that survives SIGKILL is an error."""

    def __init__(self, session: CourseSession, grace: float, forks: ForkServer | None = None) -> None:
        self.session = session
        self.root = session.course_root
        self.layout = CourseLayout(self.root)
        self.grace = grace
        self.forks = forks

    def kill(self, victims: list[psutil.Process], what: str = "could not kill pids") -> None:
        """Kill these processes all at once (one grace period for all of them)."""
        survivors = procs.kill_processes(victims, self.grace)
        if survivors:
            raise Phase5Error(f"{what}: {', '.join(str(p.pid) for p in survivors)}")

    def close_windows(self, panes: list[PaneInfo]) -> None:
        """Kill the live panes' process trees, then close their windows."""
        self.kill(trees(p.pane_pid for p in panes if not p.dead))
        for pane in panes:
            self.session.kill_window(pane.window_id)

    def close_segment(self, segment: int, orchs: Iterable[int]) -> int:
        """Every window of the segment closed and its trees killed, then a check that no worker
        of the segment is left; the number of windows closed."""
        panes = [p for p in self.session.panes() if segment_of(p.window_name) == segment]
        self.close_windows(panes)
        left = procs.course_processes(self.root, segment) + self.forked_workers(segment, orchs, whole_segment=True)
        if left:
            self.kill(left, f"segment {segment}: processes left after closing its windows")
        return len(panes)

    def close_all(self, keep_pane: str | None = None) -> None:
        """Every window of the session but ``keep_pane`` (this supervisor's own, with --detach:
        it closes as the supervisor exits, and the session with it), then the session."""
        self.close_windows([p for p in self.session.panes() if p.pane_id != keep_pane])
        if keep_pane is None:
            self.session.kill()

    def strays(self, segment: int, orch: int) -> list[psutil.Process]:
        """Workers of one orchestrator that run without its window (a killed supervisor's)."""
        return procs.course_processes(self.root, segment, orch) + self.forked_workers(segment, [orch])

    def forked_workers(self, segment: int, orchs: Iterable[int], whole_segment: bool = False) -> list[psutil.Process]:
        """Warm start: forked workers of these orchestrators still running. Their command line is
        the fork server's, without segment or orchestrator, so they are known by the
        ``worker_pid`` of their progress files (a killed supervisor's server's too) and, for a
        ``whole_segment``, as this supervisor's server's children (one segment runs at a time)."""
        named = set()
        for orch in orchs:
            progress = read_progress(self.layout, segment, orch)
            if progress is not None and progress.forked_pid:
                named.add(progress.forked_pid)
        found = [p for p in procs.forked_processes(self.root) if p.pid in named] if named else []
        if whole_segment and self.forks is not None:
            found += [p for p in self.forks.workers() if p.pid not in named]
        return found


def stop_everything(root: Path, session: CourseSession, grace: float) -> tuple[list[int], list[int], int]:
    """What ``phase5 stop`` does once the supervisor is gone: every pane's tree, every worker of
    the course without a window, fork servers and their workers, killed at once; then the
    session. Returns (pids killed, pids that survived, windows closed)."""
    panes = session.panes()
    victims = {p.pid: p for p in trees(p.pane_pid for p in panes if not p.dead)}
    for proc in procs.course_processes(root) + procs.forked_processes(root):
        victims.setdefault(proc.pid, proc)
    left = procs.kill_processes(list(victims.values()), grace)
    if session.exists():
        session.kill()
    return sorted(victims), [p.pid for p in left], len({p.window_id for p in panes})
