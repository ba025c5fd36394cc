"""An orchestrator: the process in one tmux window. It runs its agents concurrently (threads in
this one process), keeps a heartbeat/progress file for the supervisor and ``status``, retries a
failed agent alone, and merges the agents' files into its orchestrator file.

One thread per agent; a thread whose agent has nothing left to hand out takes pending baskets of
the agent with the most left and saves them into that agent's journal and file
(:mod:`worker.board`), so the orchestrator ends with its average agent, not its unluckiest.

With a batched backend (``anthropic-batch``) the agents do not run as threads: the orchestrator
collects their requests into one Message Batch per round (:mod:`worker.batch_runner`); the
journals, agent files, checks and merge are the same.

Exit statuses (:class:`~worker.exitcodes.ExitCode`): 0 done, 1 agents failed after their
attempts, 2 bad input, 3 another worker holds this orchestrator, 4 the budget (``--max-cost``) is
reached (resumable), 130/143 stopped by SIGINT/SIGTERM. Its progress file is
:class:`~worker.progress.OrchProgress`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from worker.agent import Agent
from worker.board import WorkBoard
from worker.budget import Budget, check_priced, make_pricer
from worker.checks import file_problem
from worker.cost import PriceTable
from worker.course import Course
from worker.errors import Phase5Error
from worker.exitcodes import ExitCode
from worker.generators import GeneratorOptions, make_generator
from worker.generators.base import Generator, Usage
from worker.generators.pacing import SHARED_LIMITS_FILE, Pacer, SharedBuckets, limit_heap_growth
from worker.lock import FileLock
from worker.merge import merge_orchestrator
from worker.paths import CourseLayout
from worker.plan import load_plan, load_plans
from worker.progress import AgentProgress, OrchProgress, WorkerState, reported_spend

HEARTBEAT_SECONDS = 1.0


@dataclass
class WorkerSettings:
    segment: int
    orch: int
    backend: str = "corpus"
    options: GeneratorOptions = GeneratorOptions()
    max_attempts: int = 3
    backoff: float = 1.0
    max_cost: float | None = None  # USD for the whole run (this worker plus the others' progress files)
    prices: str | None = None  # a prices file overriding the built-in table ($PHASE5_PRICES otherwise)


class Orchestrator:
    def __init__(self, course: Course, settings: WorkerSettings) -> None:
        self.course = course
        self.settings = settings
        self.layout = CourseLayout(course.root)
        plan = load_plan(course, settings.segment)
        self.batch = plan.orchestrator(settings.orch)
        self.orchestrators = len(plan.orchestrator_batches)  # of this segment: they share its in-flight budget
        self.redo = plan.redo.number if plan.redo is not None else None
        self.stop = threading.Event()
        self.agents: list[Agent] = []
        self.started_at = time.time()
        self.state = WorkerState.STARTING
        self.error: str | None = None
        self.notes: list[str] = []
        self._signal: int | None = None
        table = PriceTable.load(settings.prices)  # a bad prices file: one line, exit 2, before anything
        check_priced(table, settings.options.model, settings.max_cost, settings.backend)
        self.price = make_pricer(table)
        progress_path = self.layout.orch_progress(settings.segment, settings.orch)
        budget_segments = self._budget_segments(course)
        self.budget = Budget(
            settings.max_cost,
            own=lambda: self.cost_usd,
            others=lambda: reported_spend(self.layout.segments_dir, progress_path, budget_segments),
        )
        self.batch_session: Any = None  # the BatchSession of a batched backend, for the progress file
        self.pacer: Any = None  # the API backend's pacer (in flight, limit, 429s), for the progress file
        self.hedger: Any = None  # and its hedger (duplicates of slow requests)

    # -- the run ------------------------------------------------------------------------------------

    def run(self, on_tick: Callable[[Orchestrator], None] | None = None) -> int:
        s = self.settings
        with self._lock() as held:
            if not held:
                raise Busy(self._lock_owner())
            self._install_signals()
            self.write_progress()  # a first heartbeat before the slow parts (backend import, resume)
            path = self.layout.orch_baskets(s.segment, s.orch)
            if file_problem(self.course, path, self.batch.lego_ids) is None:
                self.agents = self._make_agents(None)
                for agent in self.agents:
                    agent.load()  # so the progress file still reports this orchestrator's spend
                self.state = WorkerState.DONE
                self.write_progress()
                return ExitCode.OK
            generator = make_generator(s.backend, self.course, s.options)
            if hasattr(generator, "stop"):
                generator.stop = self.stop  # waits inside the generator end with the worker
            if hasattr(generator, "pacer"):
                # The account's limits are shared by every worker of the run through one file.
                shared = SharedBuckets(self.layout.segments_dir / SHARED_LIMITS_FILE)
                generator.pacer = Pacer(s.options.max_in_flight, shared)
                limit_heap_growth()
            try:
                return self._run_agents(generator, on_tick)
            finally:
                generator.close()

    def _make_agents(self, generator: Generator | None) -> list[Agent]:
        s = self.settings
        return [
            Agent(
                self.course,
                s.segment,
                s.orch,
                number,
                ids,
                generator,
                self.stop,
                price=self.price,
                redo=self.redo,
            )
            for number, ids in enumerate(self.batch.agent_batches, start=1)
        ]

    def _budget_segments(self, course: Course) -> set[int]:
        """The segments whose spend counts against ``--max-cost``: the course's run, or the one redo
        this orchestrator works for (a redo's budget is its own)."""
        return {
            plan.segment_number
            for plan in load_plans(course, include_redo=True)
            if (plan.redo.number if plan.redo is not None else None) == self.redo
        }

    def _run_agents(self, generator: Any, on_tick: Callable[[Orchestrator], None] | None) -> int:
        self.agents = self._make_agents(generator)
        pending = []
        for agent in self.agents:
            if not agent.load():
                pending.append(agent)
            self.notes.extend(agent.notes)
        self.state = WorkerState.RUNNING
        if getattr(generator, "batched", False):
            self._run_batches(pending, generator, on_tick)
        elif pending:
            self._run_threads(generator, on_tick)
        return self._finish(on_tick)

    def _run_batches(
        self, pending: list[Agent], generator: Any, on_tick: Callable[[Orchestrator], None] | None
    ) -> None:
        """All agents' requests as one Message Batch per round, with the heartbeat and the pane
        kept alive while the batch is processed."""
        from worker.batch_runner import run_batches

        s = self.settings
        last_beat = [0.0]

        def on_wait() -> None:
            if time.monotonic() - last_beat[0] >= HEARTBEAT_SECONDS:
                self.write_progress()
                last_beat[0] = time.monotonic()
            if on_tick:
                on_tick(self)

        def keep(session: Any) -> None:
            self.batch_session = session

        run_batches(
            pending,
            generator,
            self.layout.orch_batch_state(s.segment, s.orch),
            self.stop,
            s.max_attempts,
            self.budget.allows,
            on_wait,
            keep,
            on_halt=self.budget.halt,
        )

    def _run_threads(self, generator: Any, on_tick: Callable[[Orchestrator], None] | None) -> None:
        """The agents' baskets through the work board. An API backend (one with a ``pacer``) gets a
        pool of threads, one per request that may be in flight: every basket of every agent is a
        task, each agent's first request writes its cached prefix and its other baskets go as
        soon as that answer has begun, and the pacer keeps the in-flight count adaptive and the
        run under the account's limits (:mod:`worker.generators.pacing`). Other backends get one
        thread per agent, done ones included: a thread with nothing of its own left helps the
        others."""
        s = self.settings
        pacer = getattr(generator, "pacer", None)
        board = WorkBoard(
            self.agents,
            self.stop,
            s.max_attempts,
            s.backoff,
            may_start=self.budget.allows,
            on_halt=self.budget.halt,
            prefix_state=self._prefix_state(generator) if pacer is not None else None,
        )
        if pacer is not None:
            generator.gate.listeners.append(board.wake)
            generator.hedger.allowed = board.drained
            pacer.share_segment(s.segment, s.orch, self.orchestrators, board.left)
            self.pacer, self.hedger = pacer, generator.hedger
        board.start()
        if pacer is not None:
            size = min(pacer.most_in_flight, sum(len(a.left) for a in self.agents)) or 1
            slot = lambda: pacer.slot(self.stop)  # noqa: E731
            jobs: list[tuple[str, Any]] = [(f"pool-{i + 1:03d}", (None, slot)) for i in range(size)]
        else:
            jobs = [(agent.label, (agent, None)) for agent in self.agents]
        all_done = threading.Event()  # wakes the loop below the moment the last thread ends
        left = [len(jobs)]
        left_lock = threading.Lock()
        if not jobs:
            all_done.set()

        def work(taker: Agent | None, slot: Any) -> None:
            try:
                board.work(taker, slot)
            finally:
                with left_lock:
                    left[0] -= 1
                    if not left[0]:
                        all_done.set()

        threads = [threading.Thread(target=work, args=args, name=name, daemon=True) for name, args in jobs]
        for thread in threads:
            thread.start()
        last_beat = 0.0
        while not all_done.is_set():
            if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                self.write_progress()
                last_beat = time.monotonic()
            if on_tick:
                on_tick(self)
            all_done.wait(0.2)
            if self.stop.is_set():
                # Agents stop between baskets; give one in flight a moment, then leave anyway
                # (threads are daemons; everything saved is already in the journals).
                board.wake()
                deadline = time.monotonic() + 1.5
                for thread in threads:
                    thread.join(timeout=max(0.0, deadline - time.monotonic()))
                break
        board.settle_states()

    def _prefix_state(self, generator: Any) -> Callable[[Agent], str]:
        """Whether an agent's cached prompt prefix is warm, being written, or free."""
        keys: dict[int, list[Any]] = {}

        def state(agent: Agent) -> str:
            if agent.number not in keys:
                first = self.course.lego(agent.lego_ids[0]).position
                keys[agent.number] = generator.conversation(self.course.context(agent.lego_ids[0]), first).cache_keys
            return str(generator.gate.state(keys[agent.number]))

        return state

    def _finish(self, on_tick: Callable[[Orchestrator], None] | None) -> int:
        s = self.settings
        if self.stop.is_set():
            self.state = WorkerState.STOPPED
            self.write_progress()
            return ExitCode.signalled(self._signal or signal.SIGTERM)
        if self.budget.reached and any(a.status.state == "budget" for a in self.agents):
            # Checked before failures: the agents that stopped for the budget are not failed.
            self.state = WorkerState.BUDGET
            self.error = self.budget.message()
            self.write_progress()
            if on_tick:
                on_tick(self)
            return ExitCode.BUDGET
        failed = [a for a in self.agents if a.status.state != "done"]
        if failed:
            first = failed[0]
            self.state = WorkerState.FAILED
            self.error = (
                f"{first.label} failed after {first.status.attempts} attempts ({first.status.last_error});"
                f" ids left: {', '.join(first.left[:5])}{' ...' if len(first.left) > 5 else ''}"
                + (f"; {len(failed) - 1} other agents failed too" if len(failed) > 1 else "")
            )
            self.write_progress()
            if on_tick:
                on_tick(self)
            return ExitCode.FAILED
        merge_orchestrator(self.course, s.segment, s.orch)
        self.state = WorkerState.DONE
        self.write_progress()
        if on_tick:
            on_tick(self)
        return ExitCode.OK

    # -- signals and lock ---------------------------------------------------------------------------

    def _install_signals(self) -> None:
        def handler(signum: int, frame: Any) -> None:
            self._signal = signum
            self.stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _lock(self) -> FileLock:
        return FileLock(self.layout.orch_lock(self.settings.segment, self.settings.orch))

    def _lock_owner(self) -> str:
        return self._lock().owner()

    # -- progress -------------------------------------------------------------------------------------

    @property
    def total(self) -> int:
        return len(self.batch.lego_ids)

    @property
    def done(self) -> int:
        return sum(a.status.done for a in self.agents)

    @property
    def usage(self) -> Usage:
        total = Usage()
        for agent in self.agents:
            total = total + agent.status.usage
        return total

    @property
    def cost_usd(self) -> float:
        """Every basket in this orchestrator's journals, priced (resumed ones included)."""
        return sum(a.status.cost_usd for a in self.agents)

    @property
    def rate(self) -> float:
        generated = sum(a.status.generated for a in self.agents)
        elapsed = time.time() - self.started_at
        return generated / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        rate = self.rate
        return (self.total - self.done) / rate if rate > 0 else None

    def progress(self) -> OrchProgress:
        s = self.settings
        return OrchProgress(
            segment=s.segment,
            orch=s.orch,
            pid=pane_pid(),
            worker_pid=os.getpid(),
            backend=s.backend,
            state=self.state,
            started_at=self.started_at,
            updated_at=time.time(),
            total=self.total,
            done=self.total if self.state == WorkerState.DONE else self.done,
            rate_per_s=round(self.rate, 3),
            eta_s=round(self.eta, 1) if self.eta is not None else None,
            tokens=self.usage.to_json(),
            requests=sum(a.status.requests for a in self.agents),
            cost_usd=round(self.cost_usd, 6),
            budget=self.budget.to_json() if s.max_cost is not None or self.budget.halted else None,
            batch=self.batch_session.status.to_json() if self.batch_session is not None else None,
            pacing=self.pacer.to_json() | self.hedger.to_json() if self.pacer is not None else None,
            agents=[AgentProgress.model_validate(a.status.to_json()) for a in self.agents],
            error=self.error,
            notes=self.notes,
        )

    def write_progress(self) -> None:
        self.progress().write(self.layout.orch_progress(self.settings.segment, self.settings.orch))


def record_failure(layout: CourseLayout, segment: int, orch: int, error: str) -> None:
    """Say in the orchestrator's progress file why its worker is ending with an error (bad input, a
    file it cannot write): the supervisor and ``status`` take the reason from there. What the
    file already holds (the spend so far, the agents) is kept; if even this write fails, the
    worker's exit status and its pane still tell."""
    path = layout.orch_progress(segment, orch)
    known = OrchProgress.load(path) or OrchProgress(segment=segment, orch=orch)
    failed = OrchProgress.model_validate(
        {
            **known.model_dump(),
            **{"state": WorkerState.FAILED, "error": error, "pid": pane_pid(), "worker_pid": os.getpid()},
            "updated_at": time.time(),
        }
    )
    with contextlib.suppress(OSError):
        failed.write(path)


def pane_pid() -> int:
    """The pid that stands for this worker: its window's process. That is this process, except
    for a worker forked by the warm-start server, whose window runs a stub that passed it the
    terminal (``$PHASE5_PANE_PID``, set by the server in the child only)."""
    stub = os.environ.get("PHASE5_PANE_PID", "")
    return int(stub) if stub.isdigit() else os.getpid()


class Busy(Phase5Error):
    """Another worker holds this orchestrator's lock: one line, exit 3."""

    exit_code = ExitCode.BUSY

    def __init__(self, owner: str) -> None:
        super().__init__(f"this orchestrator is already running (pid {owner}); not starting a second worker")
