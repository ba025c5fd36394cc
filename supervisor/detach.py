"""The course's tmux session and its first window, ``supervisor``: with ``run --detach`` the
supervisor itself runs there (:func:`start_detached`); otherwise the window follows the
supervisor's log (:func:`prepare_session`).

A detached supervisor needs no terminal: ``run --detach`` returns once the supervisor holds the
course's lock, or says why it died at once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from supervisor import procs
from supervisor.argv import log_follow_argv, supervisor_argv
from supervisor.events import LOG_NAME
from supervisor.lock import AlreadyRunning, LaunchLock, holder
from supervisor.options import RunOptions
from supervisor.resume import plans_for
from supervisor.tmux import PLACEHOLDER, CourseSession, PaneInfo, worker_secrets
from worker.course import Course
from worker.errors import Phase5Error
from worker.paths import CourseLayout, course_arg

SUPERVISOR_WINDOW = "supervisor"
DETACH_WAIT = 15.0  # seconds for a detached supervisor to take the course's lock


def prepare_session(session: CourseSession, options: RunOptions, log_path: Path, cwd: Path) -> None:
    """The session with the workers' environment, and its first window: this supervisor's own
    pane (--detach), else a view of the log (``tail -F``): what happens, as it happens, for ~1 MB
    and no CPU (a ``phase5 status --watch`` would hold a 40 MB Python process polling the files;
    people can run one anywhere)."""
    _ensure_with_environment(session)
    if options.in_session:
        # --detach kept this pane visible in case the supervisor died at once; it did not
        session.set_remain_on_exit(os.environ.get("TMUX_PANE", SUPERVISOR_WINDOW), False)
        return
    watch = log_follow_argv(log_path)
    pane = session.pane(SUPERVISOR_WINDOW)
    if pane is None:
        session.launch(SUPERVISOR_WINDOW, watch, cwd)
    elif pane.dead or pane.start_command.strip('"') == PLACEHOLDER:
        session.respawn(pane.pane_id, watch, cwd)


def _ensure_with_environment(session: CourseSession) -> None:
    """The session, with the workers' environment. A run that ended a moment ago may still have
    had its session (a detached supervisor's window closes just after it lets go of the lock):
    when it vanishes between our finding it and our writing to it, it is made again, once."""
    for attempt in (1, 2):
        try:
            session.ensure(SUPERVISOR_WINDOW)
            session.sync_environment()
            return
        except Phase5Error:
            if attempt == 2 or session.exists():
                raise


def start_detached(course: Course, options: RunOptions, wait: float = DETACH_WAIT) -> str:
    """``run --detach``: start the supervisor in the session's first window and return once it
    holds the course's lock (or report why it died); the text tells how to watch and stop it."""
    root = course.root.resolve()
    layout = CourseLayout(root)
    with LaunchLock(layout):  # a second `run` starting now waits here, then finds this one running
        pid = holder(layout)
        if pid is not None:
            raise AlreadyRunning(f"{root}: a supervisor is already running (pid {pid})")
        plans_for(course, options)  # bad input or a refused plan: one line, exit 2, before any tmux work
        session = CourseSession(root, options.tmux_socket)
        _ensure_with_environment(session)
        pane = _start_supervisor(session, supervisor_argv(root, options))
        pid = _wait_for_lock(session, pane, layout, wait)
    socket = f" -L {options.tmux_socket}" if options.tmux_socket else ""
    name = course_arg(root)
    return (
        f"supervisor started (pid {pid}) in window {SUPERVISOR_WINDOW} of tmux session {session.name}\n"
        f"  watch:  phase5 status {name} --watch\n"
        f"  look:   phase5 attach {name}   (or: tmux{socket} attach -t {session.name})\n"
        f"  stop:   phase5 stop {name}"
    )


def _start_supervisor(session: CourseSession, argv: list[str]) -> PaneInfo:
    """The supervisor in the session's first window, with the secrets it hands on to the workers
    (that window's environment only)."""
    pane = session.pane(SUPERVISOR_WINDOW)
    if pane is None:
        return session.launch(SUPERVISOR_WINDOW, argv, Path.cwd(), env=worker_secrets())
    # Kept visible if it dies at once, so the reason can be read; the supervisor turns this off.
    session.set_remain_on_exit(pane.pane_id, True)
    started = session.respawn(pane.pane_id, argv, Path.cwd(), env=worker_secrets())
    assert started is not None
    return started


def _wait_for_lock(session: CourseSession, pane: PaneInfo, layout: CourseLayout, wait: float) -> int | None:
    """The detached supervisor's pid once it holds the course's lock, or why it died at once."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        pid = holder(layout)
        if pid is not None and pid > 0:
            return pid
        now = session.pane(pane.pane_id)
        if now is None or now.dead or not procs.alive(now.pane_pid):
            tail = session.capture(pane.pane_id, 5) if now is not None else []
            tail = [line for line in tail if not line.startswith("Pane is dead")]
            raise Phase5Error(
                "the detached supervisor exited at once"
                + (f": {tail[-1].strip()}" if tail else "")
                + f" (see {layout.segments_dir / LOG_NAME})"
            )
        time.sleep(0.05)
    return None
