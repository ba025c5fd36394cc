"""The supervisor (``phase5 run``): segments one after another, one tmux window per orchestrator.

For each segment (:mod:`supervisor.segment`): launch the orchestrators that have no valid file
(staggered), record window ids and pane PIDs, poll the basket files and the panes, relaunch a
failed or stuck orchestrator alone, bounded (:mod:`supervisor.lifecycle`), and when every
orchestrator file is in and valid: merge the segment, kill every pane's process tree, close the
windows, and check that no worker of the segment is left (:mod:`supervisor.teardown`). After the
last segment: the final merge, validation and a summary (:mod:`supervisor.summary`).

Resume is the normal path: the basket files say what is done; live windows of this course are
adopted, dead ones replaced; the workers resume from their agents' journals, so nothing saved is
generated again (:mod:`supervisor.resume`). Only one supervisor runs per course
(:mod:`supervisor.lock`). A signal, the budget or an error stops every worker cleanly and leaves
the run resumable.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Protocol

from supervisor.argv import TEST_WORKER_ENV
from supervisor.context import RunContext
from supervisor.display import Display
from supervisor.events import LOG_NAME, EventLog
from supervisor.forkserver import ForkServer
from supervisor.lifecycle import BudgetReached
from supervisor.lock import LaunchLock, RunLock
from supervisor.options import RunOptions
from supervisor.resume import plans_for, resume_state
from supervisor.segment import Stagger, run_segment
from supervisor.signals import StopRequested, StopSignals
from supervisor.state import RunState, RunStatus
from supervisor.summary import finish, finish_failed, own_pane
from supervisor.teardown import Teardown
from supervisor.tmux import CourseSession
from worker.course import Course
from worker.errors import Phase5Error, as_phase5_error
from worker.exitcodes import ExitCode
from worker.generators import API_BACKENDS
from worker.paths import CourseLayout
from worker.plan import SegmentPlan, load_plans

FORK_LOG_NAME = "forkserver.log"  # in phase5_segments/: what the warm-start server prints (normally nothing)


class Job(Protocol):
    """What a supervisor runs: the course's plan (``phase5 run``) or a redo (``phase5 redo``).
    :meth:`plans` is called holding the course's lock; it gives the segments to run and what it
    did to the plan files, in words (for the log)."""

    def plans(self, course: Course, options: RunOptions) -> tuple[list[SegmentPlan], list[str]]: ...

    def describe(self, plans: list[SegmentPlan]) -> str: ...

    def finish(self, ctx: RunContext, plans: list[SegmentPlan]) -> ExitCode: ...


class CourseJob:
    """``phase5 run``: the course's own segments, then the final merge, validation and summary."""

    def plans(self, course: Course, options: RunOptions) -> tuple[list[SegmentPlan], list[str]]:
        return plans_for(course, options)

    def describe(self, plans: list[SegmentPlan]) -> str:
        return f"{len(plans)} segments"

    def finish(self, ctx: RunContext, plans: list[SegmentPlan]) -> ExitCode:
        return finish(ctx, plans)


def wants_fork_server(options: RunOptions) -> bool:
    """Warm start: on for the API backends unless ``--cold-start`` (or the tests' stand-in worker)."""
    return options.warm_start and options.backend in API_BACKENDS and not os.environ.get(TEST_WORKER_ENV)


def early_fork_server(root: Path, options: RunOptions) -> ForkServer | None:
    """The fork server, started before the supervisor loads the course, takes its lock and opens
    tmux: its imports (~1 s of one core) are what the first segment's workers wait for, and the
    supervisor's own start-up then overlaps them. None when warm start is off, the folder has no
    plan folder yet (a first run: :class:`Runner` starts it then), or it could not start (the
    runner tries again and says why). The caller stops it (:meth:`ForkServer.stop` may be called
    twice)."""
    layout = CourseLayout(root)
    if not wants_fork_server(options) or not layout.lego_pairs.is_file() or not layout.segments_dir.is_dir():
        return None  # not (yet) a folder of ours: nothing is written into it before it is loaded
    try:
        return start_fork_server(root)
    except OSError:
        return None


def start_fork_server(root: Path) -> ForkServer:
    """A started fork server for the course at ``root``, its log in the plan folder; OSError
    when it does not start."""
    server = ForkServer(root.resolve(), CourseLayout(root).segments_dir / FORK_LOG_NAME)
    server.start()
    return server


class Runner:
    """One supervisor run over a course. :meth:`run` returns the exit status. ``forks``: a fork
    server already started for this course (:func:`early_fork_server`), which the run uses and
    stops."""

    def __init__(
        self,
        course: Course,
        options: RunOptions,
        display: Display,
        job: Job | None = None,
        forks: ForkServer | None = None,
    ) -> None:
        self.course = course
        self.options = options
        self.job: Job = job or CourseJob()
        self.root = course.root.resolve()
        self.layout = CourseLayout(self.root)
        self.session = CourseSession(self.root, options.tmux_socket)
        self.log = EventLog(display, self.layout.segments_dir / LOG_NAME)
        self.signals = StopSignals()
        self.forks: ForkServer | None = None
        self._early_forks = forks
        self.ctx: RunContext | None = None
        self.lock: RunLock | None = None

    def run(self) -> int:
        lock = RunLock(self.layout)
        if self.options.in_session:
            lock.acquire()  # `run --detach` holds the launch lock until this supervisor holds this one
        else:
            with LaunchLock(self.layout):  # a `run --detach` starting this course now goes first
                lock.acquire()
        self.lock = lock
        try:
            with self.signals:
                try:
                    self.forks = self._start_fork_server()
                    return self._run()
                except StopRequested as stop:
                    self._shutdown(f"stopped by {stop}")
                    return ExitCode.signalled(stop.signum)
                except BudgetReached as budget:
                    self._shutdown(str(budget))
                    return ExitCode.BUDGET
                except OSError as exc:  # a full disk, a file the run can no longer write
                    error = as_phase5_error(exc, self.layout.segments_dir)
                    self._shutdown(f"error: {error}", RunStatus.FAILED)
                    raise error from None
                except Phase5Error as exc:
                    self._shutdown(f"error: {exc}", RunStatus.FAILED)
                    raise
                finally:
                    if self.forks is not None:
                        self.forks.stop(self.options.grace)
        finally:
            lock.release()

    def _start_fork_server(self) -> ForkServer | None:
        """Warm start (API backends): one process imports the SDK and loads the course while the
        supervisor prepares; every worker window is then forked from it in milliseconds."""
        if not wants_fork_server(self.options):
            return None
        server = self._early_forks
        if server is None or not server.alive():
            try:
                server = start_fork_server(self.root)
            except OSError as exc:
                self.log(f"warm start off: {exc}; workers start cold")
                return None
        self.log(f"warm start: fork server pid {server.pid} (workers are forked with the SDK imported)")
        return server

    def _run(self) -> int:
        plans, notes = self.job.plans(self.course, self.options)
        every = load_plans(self.course, include_redo=True)  # the state of every segment is kept
        state = resume_state(RunState.load(self.layout), self.root, self.session.name, self.options, every)
        self.log.state = state
        self.ctx = ctx = RunContext(
            course=self.course,
            options=self.options,
            session=self.session,
            log=self.log,
            signals=self.signals,
            teardown=Teardown(self.session, self.options.grace, self.forks),
            state=state,
            forks=self.forks,
            cwd=Path.cwd(),
            lock=self.lock,
        )
        ctx.save()
        self.log(
            f"supervisor pid {os.getpid()} on {self.root.name} ({self.course.description}): {self.job.describe(plans)},"
            f" backend {self.options.backend}, tmux session {self.session.name}"
            + (f" (socket {self.options.tmux_socket})" if self.options.tmux_socket else "")
        )
        for note in notes:
            self.log(note)
        ctx.ensure_session(always=True)
        stagger = Stagger(self.options)
        for plan in plans:
            self.signals.check()
            if not run_segment(ctx, plan, stagger, len(plans)):
                return finish_failed(ctx)
        return self.job.finish(ctx, plans)

    def _shutdown(self, why: str, status: RunStatus = RunStatus.STOPPED) -> None:
        """Stop every worker cleanly (trees killed, windows closed), keep the files; resumable.
        Writing the log and the state may fail too (a full disk): the display still says why,
        and nothing is left running."""
        ctx = self.ctx
        if ctx is None:
            return
        try:
            with contextlib.suppress(OSError):
                self.log(f"{why}: stopping the workers (files kept; `phase5 run` resumes)")
            ctx.state.mark_stopped(status)
            ctx.teardown.close_all(own_pane(ctx))
        finally:
            ctx.state.state, ctx.state.finished_at = status, time.time()
            with contextlib.suppress(OSError):
                ctx.save()
