"""The supervisor (``phase5 run``): segments one after another, one tmux window per orchestrator.

For each segment: launch the orchestrators that have no valid file (staggered), record window
ids and pane PIDs, poll the basket files and the panes, relaunch a failed or stuck orchestrator
alone (bounded), and when every orchestrator file is in and valid: merge the segment, kill every
pane's process tree, close the windows, and check that no worker of the segment is left. After
the last segment: the final merge, validation and a summary.

Resume is the normal path: the basket files say what is done; live windows of this course are
adopted, dead ones replaced; the workers resume from their agents' journals, so nothing saved is
generated again. Only one supervisor runs per course (:mod:`supervisor.lock`).
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor import procs
from supervisor.display import Display, segment_rows, silence
from supervisor.forkserver import ForkServer, stub_argv
from supervisor.lock import RunLock
from supervisor.state import OrchState, RunState, SegmentState
from supervisor.tmux import PLACEHOLDER, CourseSession, PaneInfo
from worker.checks import orch_file_problem, segment_file_ok
from worker.course import Course
from worker.errors import Phase5Error
from worker.generators import API_BACKENDS
from worker.merge import merge_final, merge_segment
from worker.paths import CourseLayout, course_arg
from worker.plan import DEFAULT_AGENTS, DEFAULT_ORCHESTRATORS, DEFAULT_SEGMENTS, SegmentPlan, load_plans, prepare
from worker.progress import OrchProgress, WorkerState, read_progress
from worker.report import format_report, load_basket_file, validate_baskets

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
WORKER_BAD_INPUT = "2"  # a worker exit status that no retry can fix
WORKER_BUSY = "3"  # another worker holds the orchestrator's lock
WORKER_BUDGET, EXIT_BUDGET = "4", 4  # --max-cost reached: the run stops, resumable, nothing retried
SUPERVISOR_WINDOW = "supervisor"
ORCH_WINDOW = re.compile(r"^s(\d+)-o(\d+)$")
DEFAULT_API_STAGGER = 30.0
PANE_DEATH_WAIT = 1.5  # seconds to let tmux record a dead pane (and, mostly, its exit status)
WATCH_EVERY = 0.05  # seconds between looks for a finished orchestrator while waiting for the next poll
SETTLE_POLL = 0.1  # seconds between polls while tmux has yet to record a dead worker's pane
TEST_WORKER_ENV = "PHASE5_TEST_WORKER"
LOG_NAME = "supervisor.log"  # in phase5_segments/: the supervisor's events, appended line by line
FORK_LOG_NAME = "forkserver.log"  # in phase5_segments/: what the warm-start server prints (normally nothing)
LOG_TAIL_LINES = 40  # earlier lines the first window shows of the log (this run's start among them)


def append_line(path: Path, line: str) -> None:
    """Append one line with a single write (O_APPEND): a crash leaves at most a torn last line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line.replace("\n", " ") + "\n").encode("utf-8"))
    finally:
        os.close(fd)


@dataclass
class RunOptions:
    backend: str = "corpus"
    stagger: float | None = None  # None: 30 s for API backends, 0 for offline ones
    poll: float = 2.0
    max_attempts: int = 3  # launches of one orchestrator by one supervisor
    agent_attempts: int = 3  # passed to the worker (attempts per agent)
    stuck_after: float = 300.0
    restart_stuck: bool = False
    tmux_socket: str | None = None
    segments: int | None = None  # plan shape; None: the existing plan, or the defaults
    orchestrators: int | None = None
    agents: int | None = None
    api_args: list[str] = field(default_factory=list)  # --model ... for the workers (API backends)
    grace: float = 5.0  # seconds between SIGTERM and SIGKILL
    in_session: bool = False  # this supervisor runs in the session's first window (--detach)
    warm_start: bool = True  # API backends: fork workers from a server that has the SDK imported
    stagger_segments: str = "all"  # "all": every segment's launches staggered (SPEC §4); "first": only the first's

    @property
    def stagger_s(self) -> float:
        if self.stagger is not None:
            return self.stagger
        return DEFAULT_API_STAGGER if self.backend in API_BACKENDS else 0.0


class BudgetReached(Exception):
    """A worker exited 4: the run's recorded spend reached ``--max-cost``. Stop, resumable."""


class Stopped(Exception):
    """SIGINT/SIGTERM/SIGHUP arrived: stop the workers cleanly and leave the state resumable."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def plans_for(course: Course, options: RunOptions) -> list[SegmentPlan]:
    """The course's plan: written now when missing or when a shape was asked for (prepare is a
    no-op for the same shape and refuses a different one over saved baskets)."""
    layout = CourseLayout(course.root)
    shape = (options.segments, options.orchestrators, options.agents)
    if layout.plan_files() and shape == (None, None, None):
        return load_plans(course)
    prepare(
        course,
        options.segments or DEFAULT_SEGMENTS,
        options.orchestrators or DEFAULT_ORCHESTRATORS,
        options.agents or DEFAULT_AGENTS,
    )
    return load_plans(course)


def log_follow_argv(log_path: Path) -> list[str]:
    """The first window's command outside --detach: the log's last lines, then each new one
    (``-F``: it waits for the file if it is not there yet)."""
    return ["tail", "-n", str(LOG_TAIL_LINES), "-F", str(log_path)]


def cli_argv(*args: str) -> list[str]:
    """A ``phase5`` command run by this same interpreter (what runs in the tmux windows).

    Test hook: ``$PHASE5_TEST_WORKER`` names a script that runs instead of ``-m supervisor.cli`` for
    worker commands (a stand-in that obeys the worker contract, e.g. one that goes silent)."""
    standin = os.environ.get(TEST_WORKER_ENV)
    if standin and args[:1] == ("worker",):
        return [sys.executable, standin, *args]
    return [sys.executable, "-m", "supervisor.cli", *args]


class Runner:
    """One supervisor run over a course. :meth:`run` returns the exit status."""

    def __init__(self, course: Course, options: RunOptions, display: Display) -> None:
        self.course = course
        self.options = options
        self.display = display
        self.root = course.root.resolve()
        self.layout = CourseLayout(self.root)
        self.session = CourseSession(self.root, options.tmux_socket)
        self.cwd = Path.cwd()
        self.log_path = self.layout.segments_dir / LOG_NAME
        self.total_segments = 0
        self.state: RunState | None = None
        self._wake = threading.Event()
        self._signal: int | None = None
        self._gone_since: dict[tuple[int, int], float] = {}
        self._checked: dict[tuple[int, int], tuple[float, int]] = {}  # orch file (mtime, size) seen valid
        self.forks: ForkServer | None = None
        self._launched_before = False  # with --stagger-segments first: a segment has been launched

    # -- entry --------------------------------------------------------------------------------------

    def run(self) -> int:
        lock = RunLock(self.layout)
        lock.acquire()
        previous = self._install_signals()
        try:
            self._start_fork_server()
            return self._run()
        except Stopped as stop:
            self._shutdown(f"stopped by {stop}")
            return 128 + stop.signum
        except BudgetReached as budget:
            self._shutdown(str(budget))
            return EXIT_BUDGET
        except Phase5Error as exc:
            self._shutdown(f"error: {exc}", state="failed")
            raise
        finally:
            if self.forks is not None:
                self.forks.stop(self.options.grace)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            lock.release()

    def _start_fork_server(self) -> None:
        """Warm start (API backends): one process imports the SDK and loads the course while the
        supervisor prepares; every worker window is then forked from it in milliseconds."""
        if not self.options.warm_start or self.options.backend not in API_BACKENDS or os.environ.get(TEST_WORKER_ENV):
            return
        server = ForkServer(self.root, self.layout.segments_dir / FORK_LOG_NAME)
        try:
            server.start()
        except OSError as exc:
            self.log(f"warm start off: {exc}; workers start cold")
            return
        self.forks = server
        self.log(f"warm start: fork server pid {server.pid} (workers are forked with the SDK imported)")

    def _install_signals(self) -> dict[int, Any]:
        def handler(signum: int, frame: Any) -> None:
            self._signal = signum
            self._wake.set()

        previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.signal(signum, handler)
        return previous

    def _check_stop(self) -> None:
        if self._signal is not None:
            raise Stopped(self._signal)

    def _wait(self, seconds: float, watch: Callable[[], object] | None = None) -> None:
        """Sleep between polls; a signal wakes it at once, and so does a change of ``watch()``
        (looked at every :data:`WATCH_EVERY` s: it must be cheap)."""
        if seconds > 0:
            if watch is None:
                self._wake.wait(seconds)
            else:
                deadline = time.monotonic() + seconds
                before = watch()
                while not self._wake.wait(max(0.0, min(WATCH_EVERY, deadline - time.monotonic()))):
                    if time.monotonic() >= deadline or watch() != before:
                        break
        self._check_stop()

    def _fingerprint(self, seg: SegmentState) -> tuple[object, ...]:
        """What ends a wait between polls early: a running orchestrator's file appearing or
        changing (its worker has just finished), or its worker's process ending. A few stats."""
        marks: list[object] = []
        for orch in seg.orchs:
            if orch.state not in ("running", "stuck"):
                continue
            try:
                stat = self.layout.orch_baskets(orch.segment, orch.orch).stat()
                marks.append((stat.st_mtime_ns, stat.st_size))
            except OSError:
                marks.append(None)
            marks.append(procs.alive(orch.pane_pid))
        return tuple(marks)

    def log(self, line: str) -> None:
        """An event: to the display and to ``phase5_segments/supervisor.log`` (for headless runs)."""
        self.display.event(line)
        append_line(self.log_path, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}")
        if self.state is not None:
            self.state.message = line

    def save(self) -> None:
        assert self.state is not None
        self.state.save(self.layout)

    # -- the run ------------------------------------------------------------------------------------

    def _run(self) -> int:
        plans = plans_for(self.course, self.options)
        self.total_segments = len(plans)
        started = time.time()
        state = RunState.load(self.layout)
        if state is None or state.course != str(self.root):
            state = RunState(course=str(self.root), session=self.session.name)
        state.session = self.session.name
        state.tmux_socket = self.options.tmux_socket
        state.state, state.supervisor_pid, state.run_started_at = "running", os.getpid(), started
        state.backend, state.stuck_after = self.options.backend, self.options.stuck_after
        state.finished_at, state.summary = None, None
        # the plan is the truth about which segments and orchestrators exist (it may have been redone)
        shape = {p.segment_number: {b.orchestrator_id for b in p.orchestrator_batches} for p in plans}
        state.segments = [s for s in state.segments if s.segment in shape]
        for seg in state.segments:
            seg.orchs = [o for o in seg.orchs if o.orch in shape[seg.segment]]
            for orch in seg.orchs:
                orch.run_attempts = 0
        self.state = state
        self.save()
        self.log(
            f"supervisor pid {os.getpid()} on {self.root.name}: {len(plans)} segments,"
            f" backend {self.options.backend}, tmux session {self.session.name}"
            + (f" (socket {self.options.tmux_socket})" if self.options.tmux_socket else "")
        )
        self._ensure_session(always=True)
        failed = False
        for plan in plans:
            self._check_stop()
            if not self._segment(plan):
                failed = True
                break
        if failed:
            return self._finish_failed()
        return self._finish(plans)

    def _ensure_session(self, always: bool = False) -> None:
        """The course's session with the workers' environment and its first window: at the start
        (``always``), and again before each launch if it is gone (closing the last dead window
        of a session ends it)."""
        if not always and self.session.exists():
            return
        self.session.ensure(SUPERVISOR_WINDOW)
        self.session.sync_environment()
        self._first_window()

    def _first_window(self) -> None:
        """Outside --detach, the first window follows the supervisor's log (``tail -F``): what
        happens, as it happens, for ~1 MB and no CPU (a ``phase5 status --watch`` there cost a
        40 MB Python process polling the files; people can still run it anywhere)."""
        if self.options.in_session:
            self.session.set_remain_on_exit(os.environ.get("TMUX_PANE", SUPERVISOR_WINDOW), False)
            return
        watch = log_follow_argv(self.log_path)
        pane = self.session.pane(SUPERVISOR_WINDOW)
        if pane is None:
            self.session.launch(SUPERVISOR_WINDOW, watch, self.cwd)
        elif pane.dead or pane.start_command.strip('"') == PLACEHOLDER:
            self.session.respawn(pane.pane_id, watch, self.cwd)

    # -- one segment --------------------------------------------------------------------------------

    def _segment(self, plan: SegmentPlan) -> bool:
        """Run one segment to its merge. False when an orchestrator failed for good."""
        assert self.state is not None
        number = plan.segment_number
        seg = self.state.segment(number)
        if segment_file_ok(self.course, number, plan):
            if seg.state != "merged":
                seg.state, seg.finished_at = "merged", seg.finished_at or time.time()
            self._close_segment(number)
            self.save()
            return True
        seg.state, seg.started_at, seg.finished_at = "running", seg.started_at or time.time(), None
        self.log(f"segment {number}: {plan.total_legos} baskets, {len(plan.orchestrator_batches)} orchestrators")
        pending = self._adopt_or_queue(plan, seg)
        self.save()
        stagger = self.options.stagger_s
        if self.options.stagger_segments == "first" and self._launched_before:
            stagger = 0.0  # the API is busy already: the previous segment's agents just stopped
        self._launched_before = self._launched_before or bool(pending)
        next_launch = time.monotonic()
        while True:
            self._check_stop()
            if pending and time.monotonic() >= next_launch:
                self._launch(seg.orch(pending.pop(0)))
                next_launch = time.monotonic() + stagger
            panes = {p.window_id: p for p in self.session.panes()}
            for orch in seg.orchs:
                if orch.state in ("running", "stuck"):
                    self._poll_orch(plan, orch, panes)
            self.save()
            self.display.rows(f"segment {number}/{self.total_segments}", segment_rows(self.layout, plan, self.state))
            states = {o.state for o in seg.orchs}
            if states == {"done"} and not pending:
                break
            if not pending and not states & {"running", "stuck"}:
                seg.state = "failed"
                self.save()
                return False
            timeout = self.options.poll
            if pending:
                timeout = min(timeout, max(0.0, next_launch - time.monotonic()))
            if self._gone_since:
                timeout = min(timeout, SETTLE_POLL)  # a worker just ended: read tmux's verdict soon
            self._wait(timeout, watch=lambda: self._fingerprint(seg))
        result = merge_segment(self.course, number)
        self.log(f"segment {number} merged: {result.summary()}")
        self._close_segment(number)
        seg.state, seg.finished_at = "merged", time.time()
        self.save()
        return True

    def _adopt_or_queue(self, plan: SegmentPlan, seg: SegmentState) -> list[int]:
        """Sort the segment's orchestrators into done (valid file), adopted (a live window of this
        course), and pending (to launch). Dead or duplicate windows are closed."""
        panes = self.session.panes()
        pending = []
        for batch in plan.orchestrator_batches:
            orch = seg.orch(batch.orchestrator_id)
            windows = [p for p in panes if p.window_name == orch.window]
            if self._file_valid(plan, orch):
                orch.state = "done"
                continue
            live = [p for p in windows if not p.dead and procs.alive(p.pane_pid)]
            keep = live[0] if live else None
            for pane in windows:
                if pane is not keep:
                    self._close_window(pane)
            if keep is not None:
                orch.window_id, orch.pane_id, orch.pane_pid = keep.window_id, keep.pane_id, keep.pane_pid
                orch.state, orch.adopted, orch.finished_at = "running", True, None
                orch.started_at = orch.started_at or time.time()
                self.log(f"{orch.window}: adopted the live window {keep.window_id} (pid {keep.pane_pid})")
            else:
                orch.state = "pending"
                pending.append(orch.orch)
        return pending

    def _worker_argv(self, orch: OrchState) -> list[str]:
        args = [
            "worker",
            str(self.root),
            "--segment",
            str(orch.segment),
            "--orch",
            str(orch.orch),
            "--backend",
            self.options.backend,
            "--max-attempts",
            str(self.options.agent_attempts),
        ]
        if self.options.backend in API_BACKENDS:
            args += self.options.api_args
        if self.forks is not None and self.forks.alive():
            return stub_argv(self.forks.socket, args)
        return cli_argv(*args)

    def _launch(self, orch: OrchState) -> None:
        """A new window for ``orch``; first stop any worker of it that lost its window."""
        strays = procs.course_processes(self.root, orch.segment, orch.orch) + self._forked_workers(
            orch.segment, orch.orch
        )
        if strays:
            procs.kill_processes(strays, self.options.grace)
            self.log(f"{orch.window}: stopped {len(strays)} stray worker process(es) without a window")
        self._ensure_session()
        info = self.session.launch(orch.window, self._worker_argv(orch), self.cwd)
        orch.window_id, orch.pane_id, orch.pane_pid = info.window_id, info.pane_id, info.pane_pid
        orch.attempts += 1
        orch.run_attempts += 1
        orch.state, orch.started_at, orch.finished_at, orch.adopted = "running", time.time(), None, False
        self.log(
            f"{orch.window}: launched in window {info.window_id}, pid {info.pane_pid}"
            + (f" (attempt {orch.run_attempts}/{self.options.max_attempts})" if orch.run_attempts > 1 else "")
        )
        self.save()

    def _file_valid(self, plan: SegmentPlan, orch: OrchState) -> bool:
        """Is the orchestrator file complete and valid? Checked again only when it changed."""
        path = self.layout.orch_baskets(orch.segment, orch.orch)
        try:
            stat = path.stat()
        except OSError:
            return False
        key, mark = (orch.segment, orch.orch), (stat.st_mtime, stat.st_size)
        if self._checked.get(key) == mark:
            return True
        problem = orch_file_problem(self.course, orch.segment, orch.orch, plan)
        if problem is None:
            self._checked[key] = mark
            return True
        orch.last_error = f"orchestrator file not valid: {problem}"
        return False

    def _poll_orch(self, plan: SegmentPlan, orch: OrchState, panes: dict[str, PaneInfo]) -> None:
        pane = panes.get(orch.window_id or "")
        # A valid orchestrator file settles it whatever the pane shows: a worker exits right
        # after writing it, and waiting for tmux to record the exit would cost another poll.
        if self.layout.orch_baskets(orch.segment, orch.orch).exists() and self._file_valid(plan, orch):
            self._done(plan, orch, pane)
            return
        dead = pane is None or pane.dead
        settling = pane is not None and (
            (not pane.dead and not procs.alive(orch.pane_pid))
            or (pane.dead and pane.dead_status is None and not pane.dead_signal)
        )
        if settling:
            # tmux marks the pane dead, then records its exit status, a moment after the process
            # ends; when it missed the SIGCHLD it needs a nudge (see CourseSession.reap)
            key = (orch.segment, orch.orch)
            if key not in self._gone_since:
                self.session.reap()
            gone = self._gone_since.setdefault(key, time.monotonic())
            dead = time.monotonic() - gone > PANE_DEATH_WAIT
            if not dead:
                return
        self._gone_since.pop((orch.segment, orch.orch), None)
        if dead and self._file_valid(plan, orch):  # written between the check above and now
            self._done(plan, orch, pane)
            return
        now = time.time()
        progress = read_progress(self.layout, orch.segment, orch.orch)
        if dead:
            own = progress if progress and progress.belongs_to(orch.pane_pid) else None
            status = exit_text(pane, own)
            orch.exit_statuses.append(status)
            orch.last_error = (own.error if own else None) or f"exit status {status}"
            self._failed(orch, status)
            return
        stuck, quiet = silence(progress, orch.pane_pid, orch.started_at, self.options.stuck_after, now)
        if stuck:
            if orch.state != "stuck":
                orch.state = "stuck"
                self.log(f"{orch.window}: STUCK, no heartbeat for {quiet:.0f} s (pid {orch.pane_pid})")
            if self.options.restart_stuck:
                self._kill_pids([orch.pane_pid])
                if orch.window_id:
                    self.session.kill_window(orch.window_id)
                orch.exit_statuses.append("killed (stuck)")
                orch.last_error = f"no heartbeat for {quiet:.0f} s"
                self._failed(orch, "stuck")
        elif orch.state == "stuck":
            orch.state = "running"
            self.log(f"{orch.window}: heartbeat back, running again")

    def _done(self, plan: SegmentPlan, orch: OrchState, pane: PaneInfo | None) -> None:
        self._gone_since.pop((orch.segment, orch.orch), None)
        orch.state, orch.finished_at, orch.last_error = "done", time.time(), None
        if pane is not None and pane.dead:
            orch.exit_statuses.append(exit_text(pane, None))
        self.log(f"{orch.window}: done ({plan.orchestrator(orch.orch).total_legos} baskets)")

    def _failed(self, orch: OrchState, status: str) -> None:
        """A worker died without a valid file (or was stuck): relaunch it alone, within bounds."""
        assert self.state is not None
        orch.finished_at = time.time()
        if status == WORKER_BUDGET:
            raise BudgetReached(
                orch.last_error if (orch.last_error or "").startswith("budget reached") else "budget reached"
            )
        if orch.window_id and status != "stuck":
            pane = self.session.pane(orch.window_id)
            tail = self.session.capture(orch.window_id, 3) if pane is not None else []
            if tail and orch.last_error and orch.last_error.startswith("exit status"):
                orch.last_error += f": {tail[-1].strip()[:200]}"
        retry = status != WORKER_BAD_INPUT and orch.run_attempts < self.options.max_attempts
        self.log(
            f"{orch.window}: failed (exit {status}): {orch.last_error}"
            + ("; relaunching it alone" if retry else "; no more attempts")
        )
        if not retry:
            orch.state = "failed"  # its dead pane stays visible for a person to read
            return
        if orch.window_id:
            self.session.kill_window(orch.window_id)
        self.state.retries += 1
        self._launch(orch)

    def _close_window(self, pane: PaneInfo) -> None:
        if not pane.dead and pane.pane_pid:
            self._kill_pids([pane.pane_pid])
        self.session.kill_window(pane.window_id)

    def _kill_pids(self, pids: list[int | None]) -> None:
        """Kill whole process trees, all at once (children first, SIGTERM, grace, SIGKILL)."""
        victims = []
        for pid in pids:
            if pid and procs.alive(pid):
                victims.extend(procs.tree(pid))
        victims = [p for p in victims if p.pid != os.getpid()]
        survivors = procs.kill_processes(victims, self.options.grace)
        if survivors:
            raise Phase5Error(f"could not kill pids {', '.join(str(p.pid) for p in survivors)}")

    def _close_segment(self, segment: int) -> None:
        """Kill every pane's process tree of the segment, close its windows, and check that no
        worker of the segment is left."""
        assert self.state is not None
        panes = [p for p in self.session.panes() if _segment_of(p.window_name) == segment]
        self._kill_pids([p.pane_pid for p in panes if not p.dead])
        for pane in panes:
            self.session.kill_window(pane.window_id)
        left = procs.course_processes(self.root, segment) + self._forked_workers(segment)
        if left:
            survivors = procs.kill_processes(left, self.options.grace)
            if survivors:
                raise Phase5Error(
                    f"segment {segment}: processes left after closing its windows:"
                    f" {', '.join(str(p.pid) for p in survivors)}"
                )
        if panes:
            self.log(f"segment {segment}: {len(panes)} windows closed, no process left")

    def _forked_workers(self, segment: int, orch: int | None = None) -> list[Any]:
        """Warm start: the forked workers of a segment (or of one orchestrator) still running.
        Their command line is the fork server's, without segment or orchestrator, so they are
        known by the ``worker_pid`` of the progress files (a killed supervisor's server's too) and,
        for a whole segment, as this supervisor's server's children (one segment runs at a time)."""
        if orch is not None:
            numbers = [orch]
        else:
            numbers = [o.orch for o in self.state.segment(segment).orchs] if self.state else []
        named = set()
        for number in numbers:
            progress = read_progress(self.layout, segment, number)
            if progress is not None and progress.forked_pid:
                named.add(progress.forked_pid)
        found = [p for p in procs.forked_processes(self.root) if p.pid in named] if named else []
        if orch is None and self.forks is not None:
            found += [p for p in self.forks.workers() if p.pid not in named]
        return found

    # -- the end ------------------------------------------------------------------------------------

    def _finish(self, plans: list[SegmentPlan]) -> int:
        assert self.state is not None
        result = merge_final(self.course)
        baskets, duplicates = load_basket_file(self.layout.final_baskets)
        report = validate_baskets(self.course, baskets, duplicates)
        now = time.time()
        tokens: dict[str, int] = {}
        spend = 0.0
        for plan in plans:
            for batch in plan.orchestrator_batches:
                progress = read_progress(self.layout, plan.segment_number, batch.orchestrator_id)
                if progress is None:
                    continue
                for key, value in progress.tokens.items():
                    tokens[key] = tokens.get(key, 0) + value
                spend += progress.cost_usd
        self.state.summary = {
            "baskets": result.count,
            "expected": result.expected,
            "coverage": round(report.coverage, 6),
            "valid": report.ok,
            "gate_phrases_pass": report.gate_phrases_pass,
            "e_phrases": report.e_phrases,
            "band_phrases_pass": report.band_phrases_pass,
            "band_phrases": report.band_phrases,
            "culminating_first_pass": report.culminating_first_pass,
            "culminating": report.culminating,
            "recency_pass": report.recency_pass,
            "recency_baskets": report.recency_baskets,
            "wall_time_s": round(now - self.state.run_started_at, 1),
            "wall_time_total_s": round(now - self.state.first_started_at, 1),
            "retries": self.state.retries,
            "tokens": tokens,
            "cost_usd": round(spend, 6),
        }
        self.state.state = "done" if report.ok else "failed"
        self.state.finished_at = now
        self.log(f"final merge: {result.summary()}")
        for line in format_report(report, limit=5).splitlines():
            self.display.event(line)
        self.log(
            f"done in {self.state.summary['wall_time_s']} s (since first start"
            f" {self.state.summary['wall_time_total_s']} s), retries {self.state.retries}, tokens "
            + (", ".join(f"{k} {v}" for k, v in tokens.items() if v) or "none")
            + f", spend ${spend:.4f}"
        )
        self.save()
        self._close_all()
        return EXIT_OK if report.ok else EXIT_FAILED

    def _finish_failed(self) -> int:
        """An orchestrator failed for good: stop every process, keep the failed windows' dead
        panes for people to read; the next ``run`` resumes."""
        assert self.state is not None
        failed = [o for s in self.state.segments for o in s.orchs if o.state == "failed"]
        live = [p for p in self.session.panes() if not p.dead and p.pane_id != os.environ.get("TMUX_PANE")]
        self._kill_pids([p.pane_pid for p in live])
        for pane in live:
            self.session.kill_window(pane.window_id)
        self.state.state, self.state.finished_at = "failed", time.time()
        names = ", ".join(f"{o.window} ({o.last_error})" for o in failed)
        self.log(f"run failed: {names}. Their windows stay open (dead panes) to read; fix and run again to resume")
        if self.options.in_session:
            self.session.set_remain_on_exit(os.environ.get("TMUX_PANE", SUPERVISOR_WINDOW), True)
        self.save()
        return EXIT_FAILED

    def _close_all(self) -> None:
        """Kill every pane's tree and window of the session, then the session (when this process
        is in it, its own window closes as it exits and the session goes with it)."""
        own = os.environ.get("TMUX_PANE") if self.options.in_session else None
        panes = [p for p in self.session.panes() if p.pane_id != own]
        self._kill_pids([p.pane_pid for p in panes if not p.dead])
        for pane in panes:
            self.session.kill_window(pane.window_id)
        if own is None:
            self.session.kill()

    def _shutdown(self, why: str, state: str = "stopped") -> None:
        """Stop every worker cleanly (trees killed, windows closed), keep the files; resumable."""
        if self.state is None:
            return
        try:
            self.log(f"{why}: stopping the workers (files kept; `phase5 run` resumes)")
            for seg in self.state.segments:
                for orch in seg.orchs:
                    if orch.state in ("running", "stuck", "pending"):
                        orch.state = "stopped"
                if seg.state == "running":
                    seg.state = "stopped"
            self._close_all()
        finally:
            self.state.state = state  # type: ignore[assignment]
            self.state.finished_at = time.time()
            self.save()


def exit_text(pane: PaneInfo | None, progress: OrchProgress | None) -> str:
    """A dead worker's exit status as tmux recorded it ("1", "signal 9"). tmux 3.3a sometimes
    marks a pane dead without ever recording the status; then the worker's own last word in its
    progress file stands in ("failed" means exit 1, "stopped" a signal), else "unknown"."""
    if pane is None:
        return "window closed"
    if pane.dead_signal or pane.dead_status is not None:
        return pane.exit_text
    reported = {
        WorkerState.DONE: "0",
        WorkerState.FAILED: "1",
        WorkerState.STOPPED: "stopped",
        WorkerState.BUDGET: WORKER_BUDGET,
    }
    return reported.get(progress.state, "unknown") if progress is not None else "unknown"


def _segment_of(name: str) -> int | None:
    match = ORCH_WINDOW.match(name)
    return int(match.group(1)) if match else None


def supervisor_argv(root: Path, options: RunOptions) -> list[str]:
    """The ``phase5 run`` command that the detached supervisor runs in the session's first window."""
    o = options
    argv = cli_argv(
        "run",
        str(root),
        "--backend",
        o.backend,
        "--poll",
        str(o.poll),
        "--max-attempts",
        str(o.max_attempts),
        "--agent-attempts",
        str(o.agent_attempts),
        "--stuck-after",
        str(o.stuck_after),
        "--grace",
        str(o.grace),
        "--supervisor-window",
    )
    if o.stagger is not None:
        argv += ["--stagger", str(o.stagger)]
    if o.restart_stuck:
        argv.append("--restart-stuck")
    if not o.warm_start:
        argv.append("--cold-start")
    if o.stagger_segments != "all":
        argv += ["--stagger-segments", o.stagger_segments]
    if o.tmux_socket:
        argv += ["--tmux-socket", o.tmux_socket]
    for name, value in (("--segments", o.segments), ("--orchestrators", o.orchestrators), ("--agents", o.agents)):
        if value is not None:
            argv += [name, str(value)]
    return argv + list(o.api_args)


def start_detached(course: Course, options: RunOptions, wait: float = 15.0) -> str:
    """``run --detach``: start the supervisor in the session's first window and return once it
    holds the course's lock (or report why it died). Needs no terminal."""
    from supervisor.lock import AlreadyRunning, holder

    root = course.root.resolve()
    layout = CourseLayout(root)
    pid = holder(layout)
    if pid is not None:
        raise AlreadyRunning(f"{root}: a supervisor is already running (pid {pid})")
    plans_for(course, options)  # bad input or a refused plan: one line, exit 2, before any tmux work
    session = CourseSession(root, options.tmux_socket)
    session.ensure(SUPERVISOR_WINDOW)
    session.sync_environment()
    argv = supervisor_argv(root, options)
    pane = session.pane(SUPERVISOR_WINDOW)
    if pane is None:
        pane = session.launch(SUPERVISOR_WINDOW, argv, Path.cwd())
    else:
        # Kept visible if it dies at once, so the reason can be read; the supervisor turns this off.
        session.set_remain_on_exit(pane.pane_id, True)
        pane = session.respawn(pane.pane_id, argv, Path.cwd())
    assert pane is not None
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        pid = holder(layout)
        if pid is not None and pid > 0:
            break
        now = session.pane(pane.pane_id)
        if now is None or now.dead or not procs.alive(now.pane_pid):
            tail = session.capture(pane.pane_id, 5) if now is not None else []
            raise Phase5Error(
                "the detached supervisor exited at once"
                + (f": {tail[-1].strip()}" if tail else "")
                + f" (see {layout.segments_dir / LOG_NAME})"
            )
        time.sleep(0.05)
    socket = f" -L {options.tmux_socket}" if options.tmux_socket else ""
    course = course_arg(root)
    return (
        f"supervisor started (pid {pid}) in window {SUPERVISOR_WINDOW} of tmux session {session.name}\n"
        f"  watch:  phase5 status {course} --watch\n"
        f"  look:   phase5 attach {course}   (or: tmux{socket} attach -t {session.name})\n"
        f"  stop:   phase5 stop {course}"
    )
