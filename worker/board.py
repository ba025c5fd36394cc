"""The work board of an orchestrator's agent threads: work stealing, with every basket kept by
the agent that owns it in the plan.

Each agent owns its plan batch: its journal, its agent file, its attempts. The board hands out
*claims* (owner, LEGO id) to the orchestrator's threads, one thread per agent: a thread takes the
next id of its own agent first; when its agent has nothing left to hand out, it takes the LAST
pending id of the agent with the most pending (the owner works from the front, the thieves from
the end, so they meet once). Whoever generates a basket, it is generated with the owner's cached
prompt prefix and saved into the owner's journal and agent file, so the plan and the files on
disk are exactly what they would be without stealing. A segment then ends with the
orchestrator's average agent instead of its unluckiest one (the one that drew the retries).

An id is handed out once: it is *in flight* until it is saved, and goes back to its owner's queue
(at the front) only when its generation fails. Attempts are counted per LEGO of the owner
(:meth:`worker.agent.Agent.attempt_failed`): a failed basket, whoever generated it, is a failed
attempt of that LEGO; the owner's ids then wait for its backoff before they are handed out again,
and once one of its LEGOs has failed ``max_attempts`` times the owner is failed and its ids are no
longer handed out. A SIGKILL loses at most the baskets in flight; on restart the journals say what
is saved.

With an API backend the orchestrator runs a pool of threads instead (as many as requests may be
in flight): a pool thread has no agent of its own and takes the last pending id of the agent with
the most pending, among the agents whose cached prompt prefix may be used now. An agent whose
prefix is not written yet gets one claim (its first request writes the prefix); its other ids
wait until that answer has begun (``prefix_state``, from the generator's prefix gate), then all
of them may go at once.

Locks: one condition for the board (queues, ids in flight, attempts, states: short sections, and
choosing the agent with the most left needs one consistent view of all queues) and one lock per
agent around its saved map, journal append and file write (disk work, so that one agent's fsync
never holds up the hand-out or another agent's save).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from worker.agent import Agent, Stopped
from worker.generators.base import Cancelled, GeneratedBasket, GenerationError, SpendLimitReached

#: Longest an idle thread sleeps before it looks at the board again (stop, budget, backoff end).
IDLE_WAIT_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0


@dataclass(frozen=True)
class Claim:
    """One id handed out, and the agent that owns it."""

    owner: Agent
    lego_id: str


@dataclass(eq=False)
class _Slot:
    """The board's view of one agent."""

    agent: Agent
    queue: deque[str]  # ids not saved and not in flight, in plan order
    flying: set[str] = field(default_factory=set)
    not_before: float = 0.0  # monotonic time its backoff ends
    writing: bool = False  # one thread is writing its agent file
    first_out: str | None = None  # the id handed out to write the agent's cached prefix, while it is not warm
    lock: threading.Lock = field(default_factory=threading.Lock)  # saved map, journal, file


def _pending(slot: _Slot) -> int:
    """Sort key: the agent with the most ids pending first."""
    return -len(slot.queue)


def error_text(exc: BaseException) -> str:
    """The first line of an error, with its type unless it is a :class:`GenerationError`."""
    text = str(exc).splitlines()[0][:300] if str(exc) else ""
    return text if isinstance(exc, GenerationError) else f"{type(exc).__name__}: {text}"


class WorkBoard:
    """Hands out (owner, LEGO id) claims to an orchestrator's agent threads; see the module doc.

    Call :meth:`start` once (main thread), run :meth:`work` in one thread per agent, call
    :meth:`wake` when the stop event is set, and :meth:`settle_states` when the threads are done.
    """

    def __init__(
        self,
        agents: list[Agent],
        stop: threading.Event,
        max_attempts: int,
        backoff: float = 1.0,
        may_start: Callable[[], bool] | None = None,
        on_halt: Callable[[str], None] | None = None,
        prefix_state: Callable[[Agent], str] | None = None,
    ) -> None:
        """``may_start`` is asked before each basket (False: the budget is reached, hand out
        nothing more); ``on_halt`` hears why when the API says a spend limit is reached (then
        nothing more is handed out either, and no attempt counts as failed); ``prefix_state`` says
        whether an agent's cached prompt prefix is ``"warm"``, being ``"writing"`` or ``"free"``
        (None: prefixes are not the board's concern)."""
        self.agents = agents
        self.stop = stop
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.may_start = may_start
        self.on_halt = on_halt
        self.prefix_state = prefix_state
        self.budget_reached = False
        self._cond = threading.Condition()
        self._slots = {a.number: _Slot(a, deque(a.left)) for a in agents if a.status.state != "done"}

    # -- the threads -------------------------------------------------------------------------------

    def start(self) -> None:
        """Agents with work get their first attempt; one with everything already in its journal
        (killed before its file was written) writes its file now."""
        for slot in self._slots.values():
            slot.agent.status.attempts = max(slot.agent.status.attempts, 1)
            slot.agent.status.state = "running"
            if not slot.queue:
                with self._cond:
                    slot.writing = True
                self._write(slot)

    def work(self, taker: Agent | None, slot: Callable[[], AbstractContextManager[bool]] | None = None) -> None:
        """The body of ``taker``'s thread (None: a pool thread): claim, generate, save, until
        nothing is left to hand out (everything saved or failed), the stop event or the budget.
        ``slot`` (a pool thread's) is held around each basket: the worker's in-flight limit."""
        while True:
            with slot() if slot is not None else contextlib.nullcontext(True) as entered:
                if not entered or not self._one(taker):
                    return

    def _one(self, taker: Agent | None) -> bool:
        """Claim, generate and save one basket; False when there is nothing more to do."""
        claim = self.claim(taker)
        if claim is None:
            return False
        try:
            result = claim.owner.make(claim.lego_id)
        except (Stopped, Cancelled):
            with self._cond:
                self._give_back(claim)  # the stop came during the basket: it stays unsaved
            return False
        except SpendLimitReached as exc:
            self.halt(claim, str(exc))
            return False
        except Exception as exc:  # GenerationError, or a backend bug: the owner's attempt failed
            self.failed(claim, error_text(exc))
            return True
        if self.stop.is_set():
            with self._cond:
                self._give_back(claim)
            return False  # the basket in flight when the stop came is not saved half-way
        self.save(claim, result, taker)
        return True

    def claim(self, taker: Agent | None) -> Claim | None:
        """The next id for ``taker``'s thread, waiting while ids are only in flight or backing
        off; None when there is nothing more to hand out."""
        with self._cond:
            while True:
                if self.stop.is_set() or self.budget_reached:
                    return None
                claim = self._pick(taker, time.monotonic())
                if claim is not None:
                    break
                if self._settled():
                    self._cond.notify_all()
                    return None
                self._cond.wait(self._idle_wait())
        if self.may_start is not None and not self.may_start():
            with self._cond:
                self.budget_reached = True
                self._give_back(claim)
                self._cond.notify_all()
            return None
        return claim

    def halt(self, claim: Claim, reason: str) -> None:
        """A spend limit answered: the basket goes back unsaved, nothing more is handed out."""
        with self._cond:
            self.budget_reached = True
            self._give_back(claim)
            self._cond.notify_all()
        if self.on_halt is not None:
            self.on_halt(reason)

    def drained(self) -> bool:
        """Nothing left to hand out (what is not saved is in flight, or its agent has failed)."""
        with self._cond:
            return all(not s.queue or s.agent.status.state == "failed" for s in self._slots.values())

    def left(self) -> int:
        """Baskets not saved yet (waiting, backing off or in flight) of agents not failed."""
        with self._cond:
            return sum(len(s.queue) + len(s.flying) for s in self._slots.values() if s.agent.status.state != "failed")

    def wake(self) -> None:
        """Make idle threads look at the board now (after the stop event is set)."""
        with self._cond:
            self._cond.notify_all()

    def save(self, claim: Claim, result: GeneratedBasket, taker: Agent | None) -> None:
        """Save a generated basket into its owner's journal; the owner's last basket writes its
        agent file."""
        owner = claim.owner
        slot = self._slots[owner.number]
        try:
            with slot.lock:
                owner.record(result)
                if taker is not None and taker is not owner:
                    owner.status.stolen += 1
        except Exception as exc:  # the journal could not be written: the basket is not saved
            self.failed(claim, error_text(exc))
            return
        with self._cond:
            slot.flying.discard(claim.lego_id)
            if slot.first_out == claim.lego_id:
                slot.first_out = None
            complete = (
                not slot.queue and not slot.flying and not slot.writing and owner.status.state not in ("done", "failed")
            )
            if complete:
                slot.writing = True
            else:
                self._cond.notify_all()
        if complete:
            self._write(slot)

    def settle_states(self) -> None:
        """After the threads: an agent with work left is stopped, or waits for a higher budget."""
        for slot in self._slots.values():
            st = slot.agent.status
            if st.state not in ("done", "failed"):
                st.state = "budget" if self.budget_reached and not self.stop.is_set() else "stopped"

    # -- inside the board --------------------------------------------------------------------------

    def _pick(self, taker: Agent | None, now: float) -> Claim | None:
        """Own agent's next id first, else the last id of the agent with the most pending (whose
        prefix may be used now); an agent's first request for its prefix is its next id."""
        own = self._slots.get(taker.number) if taker is not None else None
        if own is not None and self._ready(own, now):
            slot, lego_id = own, own.queue.popleft()
        else:
            # Most pending first (ties: the lowest agent number); the prefix is asked only of
            # candidates in that order: a pick asks one agent, not all ten (a worker picks
            # hundreds of times a second).
            ready = sorted((s for s in self._slots.values() if s is not own and self._ready(s, now)), key=_pending)
            for slot in ready:
                state = self._prefix(slot)
                if self._may_use_prefix(slot, state):
                    break
            else:
                return None
            if state == "free":
                lego_id = slot.queue.popleft()  # in plan order, as its own thread would
                slot.first_out = lego_id
            else:
                lego_id = slot.queue.pop()
        slot.flying.add(lego_id)
        st = slot.agent.status
        if st.state == "retrying":
            st.state = "running"  # its backoff is over: the new attempt starts
        return Claim(slot.agent, lego_id)

    def _prefix(self, slot: _Slot) -> str:
        return self.prefix_state(slot.agent) if self.prefix_state is not None else "warm"

    @staticmethod
    def _may_use_prefix(slot: _Slot, state: str) -> bool:
        """A warm prefix, or a free one that no claim of the agent is writing yet."""
        return state == "warm" or (state == "free" and slot.first_out is None)

    @staticmethod
    def _ready(slot: _Slot, now: float) -> bool:
        return bool(slot.queue) and slot.agent.status.state != "failed" and slot.not_before <= now

    def _settled(self) -> bool:
        """Nothing pending that will ever be handed out, nothing in flight, no file being written."""
        return all(
            (not s.queue or s.agent.status.state == "failed") and not s.flying and not s.writing
            for s in self._slots.values()
        )

    def _idle_wait(self) -> float:
        backoffs = [s.not_before for s in self._slots.values() if s.queue and s.agent.status.state == "retrying"]
        if not backoffs:
            return IDLE_WAIT_SECONDS
        return min(IDLE_WAIT_SECONDS, max(0.0, min(backoffs) - time.monotonic()))

    def _give_back(self, claim: Claim) -> None:
        """Return an unsaved id to its owner's queue, in plan order (call with the board held)."""
        slot = self._slots[claim.owner.number]
        slot.flying.discard(claim.lego_id)
        if slot.first_out == claim.lego_id:
            slot.first_out = None
        if claim.lego_id not in claim.owner.saved:
            self._requeue(slot, [claim.lego_id])

    @staticmethod
    def _requeue(slot: _Slot, ids: list[str]) -> None:
        """Put ``ids`` back into the slot's queue, which stays in plan order (the owner takes the
        front, thieves the end)."""
        pending = set(slot.queue) | set(ids)
        slot.queue = deque(i for i in slot.agent.lego_ids if i in pending)

    def failed(self, claim: Claim, reason: str) -> None:
        """The claimed basket could not be made: a failed attempt of its owner, whoever made it."""
        with self._cond:
            self._give_back(claim)
            self._attempt_failed(self._slots[claim.owner.number], [claim.lego_id], reason)
            self._cond.notify_all()

    def _attempt_failed(self, slot: _Slot, lego_ids: list[str], reason: str) -> None:
        """An attempt of each of ``lego_ids`` failed (call with the board held): the owner backs
        off, or is failed once one of its LEGOs has failed ``max_attempts`` times."""
        st = slot.agent.status
        if st.state == "failed":
            return
        st.last_error = reason or "failed"
        used = slot.agent.attempt_failed(lego_ids)
        if used >= self.max_attempts:
            st.state = "failed"
            return
        slot.not_before = time.monotonic() + min(self.backoff * 2 ** (used - 1), MAX_BACKOFF_SECONDS)
        st.attempts = max(st.attempts, used + 1)
        st.state = "retrying"

    def _write(self, slot: _Slot) -> None:
        """Write a complete agent's file (one thread at a time, ``slot.writing`` set). A basket
        that breaks a rule is dropped by :meth:`Agent.write_file`: it goes back to the queue and
        the attempt failed."""
        agent = slot.agent
        try:
            with slot.lock:
                agent.write_file()
            problem = None
        except Exception as exc:
            problem = error_text(exc)
        with self._cond:
            slot.writing = False
            if problem is not None:
                dropped = [i for i in agent.left if i not in slot.flying]
                self._requeue(slot, dropped)
                self._attempt_failed(slot, dropped, problem)
            self._cond.notify_all()
