"""One orchestrator's life under a supervisor, as a small state machine (as supervisord's
``Subprocess.transition``): each poll, :meth:`OrchLifecycle.transition` looks at the
orchestrator's file, its pane and its heartbeat and moves it on.

::

    PENDING --launch--> RUNNING --valid file--> DONE
                          |  ^ \\--no heartbeat--> STUCK --heartbeat back--> RUNNING
                          |  |                      |  \\--valid file--> DONE
                          |  +--relaunch alone------+ (dead pane, or stuck with --restart-stuck)
                          \\--dead, out of attempts (or bad input)--> FAILED
    any but DONE and FAILED --the run stops (signal, stop, budget)--> STOPPED

A new supervisor starts every orchestrator afresh with :meth:`OrchLifecycle.resume`: DONE when
its file is valid, RUNNING when a live window of it is there to adopt, else PENDING.
"""

from __future__ import annotations

import time

from supervisor import procs
from supervisor.argv import worker_argv
from supervisor.context import RunContext
from supervisor.display import silence
from supervisor.state import OrchState, OrchStatus
from supervisor.teardown import trees
from supervisor.tmux import PaneInfo, worker_secrets
from worker.checks import orch_file_problem
from worker.errors import NoSpace
from worker.exitcodes import ExitCode
from worker.plan import SegmentPlan
from worker.progress import OrchProgress, WorkerState, read_progress

PANE_DEATH_WAIT = 1.5  # seconds to let tmux record a dead pane (and, mostly, its exit status)
KILLED_STUCK = "killed (stuck)"  # the exit status recorded for a stuck worker killed to relaunch it
TMUX_DEAD_PANE_LINE = "Pane is dead"  # what tmux writes into a dead pane kept with remain-on-exit

#: The moves within one supervisor's run; :meth:`OrchLifecycle.change` refuses any other.
TRANSITIONS: dict[OrchStatus, frozenset[OrchStatus]] = {
    OrchStatus.PENDING: frozenset({OrchStatus.RUNNING, OrchStatus.STOPPED}),
    OrchStatus.RUNNING: frozenset(
        {OrchStatus.RUNNING, OrchStatus.STUCK, OrchStatus.DONE, OrchStatus.FAILED, OrchStatus.STOPPED}
    ),
    OrchStatus.STUCK: frozenset({OrchStatus.RUNNING, OrchStatus.DONE, OrchStatus.FAILED, OrchStatus.STOPPED}),
    OrchStatus.DONE: frozenset(),
    OrchStatus.FAILED: frozenset(),
    OrchStatus.STOPPED: frozenset(),
}


class BudgetReached(Exception):
    """A worker exited 4: the run's recorded spend reached ``--max-cost``. Stop, resumable."""


def exit_text(pane: PaneInfo | None, progress: OrchProgress | None) -> str:
    """A dead worker's exit status as tmux recorded it ("1", "signal 9"). tmux 3.3a sometimes
    marks a pane dead without ever recording the status; then the worker's own last word in its
    progress file stands in ("failed" means exit 1, "stopped" a signal), else "unknown"."""
    if pane is None:
        return "window closed"
    if pane.dead_signal or pane.dead_status is not None:
        return pane.exit_text
    said = {
        WorkerState.DONE: ExitCode.OK.pane_text,
        WorkerState.FAILED: ExitCode.FAILED.pane_text,
        WorkerState.STOPPED: "stopped",
        WorkerState.BUDGET: ExitCode.BUDGET.pane_text,
    }
    return said.get(progress.state, "unknown") if progress is not None else "unknown"


class OrchLifecycle:
    """Orchestrator ``record`` of ``plan``'s segment; its state lives in ``record`` (saved with
    the run state), the rest only as long as this supervisor."""

    def __init__(self, ctx: RunContext, plan: SegmentPlan, record: OrchState) -> None:
        self.ctx = ctx
        self.plan = plan
        self.record = record
        self.gone_since: float | None = None  # when its worker was first seen gone, tmux not yet sure
        self._valid_mark: tuple[float, int] | None = None  # (mtime, size) of its file last found valid

    @property
    def state(self) -> OrchStatus:
        return self.record.state

    def change(self, new: OrchStatus) -> None:
        if new not in TRANSITIONS[self.record.state]:
            raise RuntimeError(f"{self.record.window}: no transition from {self.record.state} to {new}")
        self.record.state = new

    # -- a new supervisor ----------------------------------------------------------------------------

    def resume(self, panes: list[PaneInfo]) -> OrchStatus:
        """Start afresh from what is on disk and in tmux: DONE (a valid file), RUNNING (a live
        window of it adopted), or PENDING (to launch). Dead or duplicate windows are closed."""
        orch = self.record
        if self.file_valid():
            orch.state = OrchStatus.DONE
            return orch.state
        windows = [p for p in panes if p.window_name == orch.window]
        live = [p for p in windows if not p.dead and procs.alive(p.pane_pid)]
        keep = live[0] if live else None
        self.ctx.teardown.close_windows([p for p in windows if p is not keep])
        if keep is None:
            orch.state = OrchStatus.PENDING
            return orch.state
        orch.window_id, orch.pane_id, orch.pane_pid = keep.window_id, keep.pane_id, keep.pane_pid
        orch.state, orch.adopted, orch.finished_at = OrchStatus.RUNNING, True, None
        orch.started_at = orch.started_at or time.time()
        self.ctx.log(f"{orch.window}: adopted the live window {keep.window_id} (pid {keep.pane_pid})")
        return orch.state

    # -- moves -------------------------------------------------------------------------------------

    def launch(self) -> None:
        """A new window for it; first stop any worker of it that lost its window."""
        ctx, orch = self.ctx, self.record
        strays = ctx.teardown.strays(orch.segment, orch.orch)
        if strays:
            procs.kill_processes(strays, ctx.options.grace)
            ctx.log(f"{orch.window}: stopped {len(strays)} stray worker process(es) without a window")
        ctx.ensure_session()
        if ctx.forks is not None and (why := ctx.forks.unusable()):
            ctx.stop_using_fork_server(why)
        argv = worker_argv(ctx.root, orch.segment, orch.orch, ctx.options, ctx.forks)
        info = ctx.session.launch(orch.window, argv, ctx.cwd, env=worker_secrets())
        self.change(OrchStatus.RUNNING)
        orch.window_id, orch.pane_id, orch.pane_pid = info.window_id, info.pane_id, info.pane_pid
        orch.attempts += 1
        orch.run_attempts += 1
        orch.started_at, orch.finished_at, orch.adopted = time.time(), None, False
        ctx.log(
            f"{orch.window}: launched in window {info.window_id}, pid {info.pane_pid}"
            + (f" (attempt {orch.run_attempts}/{ctx.options.max_attempts})" if orch.run_attempts > 1 else "")
        )
        ctx.save()

    def transition(self, panes: dict[str, PaneInfo]) -> None:
        """One poll of a RUNNING or STUCK orchestrator (``panes`` by window id)."""
        orch = self.record
        pane = panes.get(orch.window_id or "")
        # A valid orchestrator file settles it whatever the pane shows: a worker exits right
        # after writing it, and waiting for tmux to record the exit would cost another poll.
        if self.ctx.layout.orch_baskets(orch.segment, orch.orch).exists() and self.file_valid():
            self._done(pane)
            return
        dead = pane is None or pane.dead
        if pane is not None and self._settling(pane):
            # tmux marks the pane dead, then records its exit status, a moment after the process
            # ends; when it missed the SIGCHLD it needs a nudge (see CourseSession.reap)
            if self.gone_since is None:
                self.ctx.session.reap()
                self.gone_since = time.monotonic()
            dead = time.monotonic() - self.gone_since > PANE_DEATH_WAIT
            if not dead:
                return
        self.gone_since = None
        if dead and self.file_valid():  # written between the check above and now
            self._done(pane)
            return
        progress = read_progress(self.ctx.layout, orch.segment, orch.orch)
        if dead:
            own = progress if progress is not None and progress.belongs_to(orch.pane_pid) else None
            status = exit_text(pane, own)
            orch.exit_statuses.append(status)
            orch.last_error = (own.error if own else None) or f"exit status {status}"
            self._failed(status)
            return
        self._watch_heartbeat(progress)

    def _settling(self, pane: PaneInfo) -> bool:
        """Has its worker ended without tmux having recorded it all yet?"""
        if not pane.dead:
            return not procs.alive(self.record.pane_pid)
        return pane.dead_status is None and not pane.dead_signal

    def _watch_heartbeat(self, progress: OrchProgress | None) -> None:
        orch, options = self.record, self.ctx.options
        stuck, quiet = silence(progress, orch.pane_pid, orch.started_at, options.stuck_after, time.time())
        if not stuck:
            if orch.state == OrchStatus.STUCK:
                self.change(OrchStatus.RUNNING)
                self.ctx.log(f"{orch.window}: heartbeat back, running again")
            return
        if orch.state != OrchStatus.STUCK:
            self.change(OrchStatus.STUCK)
            self.ctx.log(f"{orch.window}: STUCK, no heartbeat for {quiet:.0f} s (pid {orch.pane_pid})")
        if options.restart_stuck:
            self.ctx.teardown.kill(trees([orch.pane_pid]))
            if orch.window_id:
                self.ctx.session.kill_window(orch.window_id)
            orch.exit_statuses.append(KILLED_STUCK)
            orch.last_error = f"no heartbeat for {quiet:.0f} s"
            self._failed("stuck")

    def _done(self, pane: PaneInfo | None) -> None:
        orch = self.record
        self.gone_since = None
        self.change(OrchStatus.DONE)
        orch.finished_at, orch.last_error = time.time(), None
        if pane is not None and pane.dead:
            orch.exit_statuses.append(exit_text(pane, None))
        self.ctx.log(f"{orch.window}: done ({self.plan.orchestrator(orch.orch).total_legos} baskets)")

    def _failed(self, status: str) -> None:
        """Its worker died without a valid file (or was stuck): relaunch it alone, within bounds."""
        ctx, orch = self.ctx, self.record
        orch.finished_at = time.time()
        if status == ExitCode.BUDGET.pane_text:
            raise BudgetReached(
                orch.last_error if (orch.last_error or "").startswith("budget reached") else "budget reached"
            )
        if orch.window_id and status != "stuck":
            pane = ctx.session.pane(orch.window_id)
            shown = ctx.session.capture(orch.window_id, 4) if pane is not None else []
            tail = [line for line in shown if not line.startswith(TMUX_DEAD_PANE_LINE)]  # tmux's, not the worker's
            if tail and orch.last_error and orch.last_error.startswith("exit status"):
                orch.last_error += f": {tail[-1].strip()[:200]}"
        if status == ExitCode.NO_SPACE.pane_text:
            raise NoSpace(f"{orch.window}: {orch.last_error}; the run is stopped, free some space and run it again")
        retry = status != ExitCode.BAD_INPUT.pane_text and orch.run_attempts < ctx.options.max_attempts
        ctx.log(
            f"{orch.window}: failed (exit {status}): {orch.last_error}"
            + ("; relaunching it alone" if retry else "; no more attempts")
        )
        if not retry:
            self.change(OrchStatus.FAILED)  # its dead pane stays visible for a person to read
            return
        if orch.window_id:
            ctx.session.kill_window(orch.window_id)
        ctx.state.retries += 1
        self.launch()

    # -- looks -------------------------------------------------------------------------------------

    def file_valid(self) -> bool:
        """Is its orchestrator file complete and valid? Checked again only when it changed."""
        orch = self.record
        try:
            stat = self.ctx.layout.orch_baskets(orch.segment, orch.orch).stat()
        except OSError:
            return False
        mark = (stat.st_mtime, stat.st_size)
        if self._valid_mark == mark:
            return True
        problem = orch_file_problem(self.ctx.course, orch.segment, orch.orch, self.plan)
        if problem is None:
            self._valid_mark = mark
            return True
        orch.last_error = f"orchestrator file not valid: {problem}"
        return False

    def fingerprint(self) -> tuple[object, ...]:
        """What changes when an active orchestrator's worker finishes: its file appears or changes,
        or its process ends. A stat and a process look."""
        if not self.state.active:
            return ()
        orch = self.record
        try:
            stat = self.ctx.layout.orch_baskets(orch.segment, orch.orch).stat()
            mark: object = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            mark = None
        return (mark, procs.alive(orch.pane_pid))
