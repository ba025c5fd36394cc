"""Hedged requests for the tail (Dean and Barroso, "The Tail at Scale", 2013).

With hundreds of requests in flight, a segment ends with its slowest answer, and a few answers
in a hundred take four times the median or more. A request still unanswered once it has taken
longer than nine in ten answers do gets one duplicate; whichever answer ends first is taken, and
the other stream is closed. Duplicates go only in a worker's tail (once nothing is left to hand
out), so they never take the place of a first request; a request whose time came before goes
once the tail begins. In the last of the tail (:data:`DEEP_TAIL` requests or fewer in flight),
where the worker's end waits on a handful of answers and its connections and CPU are idle, a
request gets its duplicate sooner: once it is older than half the answers
(:data:`DEEP_TAIL_QUANTILE`). A duplicate reads the prefix its original's writer cached (a writer itself
is duplicated only once its answer has begun, when what it writes is readable), so it adds no
cache write; it is counted as a request and its tokens as spent (the output of a closed stream
as much as the answer taken: the API bills what was generated before the close, which is never
more). At most ``share`` of the requests are hedged.

:class:`Race` holds one request's streams; :class:`Hedger` keeps the latency figures, decides
when to hedge and runs the duplicates on a few threads, with one clock thread for all deadlines.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

#: Answers seen before any hedge (the latency quantile needs them).
MIN_SAMPLES = 50
QUANTILE = 0.9
#: Requests in flight (originals) at or below which the worker is in its deep tail, and the
#: latency quantile after which a request is duplicated there.
DEEP_TAIL = 12
DEEP_TAIL_QUANTILE = 0.5
#: No duplicate of a request younger than this: below it, waiting costs less than a request.
MIN_DEADLINE_S = 0.2
SHARE = 0.15
THREADS = 32
#: How often requests whose deadline passed before the tail look whether it has come.
RECHECK_S = 0.05
#: How often a request sent before enough answers were seen looks whether the deadline is known.
UNKNOWN_RECHECK_S = 0.25


class Race:
    """One request and, maybe, its duplicate: the first answer that ends wins and closes the rest."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.done = threading.Event()
        self.winner: Any = None
        self.winner_role: str | None = None
        self.streams: dict[str, Any] = {}
        self.snapshots: dict[str, Any] = {}  # role -> usage at message_start (what a closed one cost)
        self.hedged = False  # a duplicate's time came
        self.pending = False  # a duplicate is queued, not yet sent or given up (no room, writer not begun)
        self.launched = False  # a duplicate was sent

    def launch(self) -> bool:
        """The duplicate is about to be sent: False when the race is over or has its duplicate
        already (then it is not)."""
        with self._lock:
            if self.done.is_set() or self.launched:
                return False
            self.launched = True
            return True

    def register(self, role: str, stream: Any) -> bool:
        """A stream opened (its request was sent); False when the race is already over."""
        with self._lock:
            self.streams[role] = stream
            return not self.done.is_set()

    def finish(self, role: str, message: Any) -> bool:
        """``role``'s answer ended: True when it wins (the others are closed)."""
        with self._lock:
            if self.done.is_set():
                return False
            self.winner, self.winner_role = message, role
            self.done.set()
            others = [s for r, s in self.streams.items() if r != role]
        for stream in others:
            abort(stream)
        return True


def abort(stream: Any) -> None:
    """End a stream another thread is reading: shut its socket down, which wakes the reader
    blocked on it at once (closing the response from here would not), and makes the client drop
    the connection; the reader's own context then closes the stream."""
    with contextlib.suppress(Exception):
        network = stream.response.extensions["network_stream"]
        network.get_extra_info("socket").shutdown(socket.SHUT_RDWR)


class Hedger:
    """Per generator: latency figures, the hedge deadline, and the threads that run duplicates."""

    def __init__(self, quantile: float = QUANTILE, share: float = SHARE, min_samples: int = MIN_SAMPLES) -> None:
        self.quantile, self.share, self.min_samples = quantile, share, min_samples
        self._latencies: deque[float] = deque(maxlen=500)
        self._lock = threading.Lock()
        self.requests = 0
        self.hedges = 0
        self.wins = 0  # hedges whose answer ended first
        self.without_room = 0  # hedges not sent: the account's limits had no room for them
        self._clock = _Clock()
        self._pool: ThreadPoolExecutor | None = None
        #: Whether duplicates may go now: the orchestrator allows them once nothing is left to hand
        #: out (its tail), so that they never take a place a first request could use.
        self.allowed: Callable[[], bool] = lambda: True
        self._waiting: list[tuple[Race, Callable[[], None]]] = []  # deadline passed before the tail
        self._after: float | None = None  # the latency quantile, once enough answers are seen
        self._deep_after: float | None = None  # the deep tail's quantile
        self._live: dict[Race, tuple[float, Callable[[], None]]] = {}  # requests in flight: start, launch
        self._rechecking = False

    def record(self, seconds: float) -> None:
        with self._lock:
            self._latencies.append(seconds)
            if len(self._latencies) >= self.min_samples and len(self._latencies) % 10 == 0:
                ordered = sorted(self._latencies)
                self._after = ordered[min(len(ordered) - 1, int(self.quantile * len(ordered)))]
                self._deep_after = ordered[int(DEEP_TAIL_QUANTILE * len(ordered))]

    def deadline(self) -> float | None:
        """Seconds after which a request gets a duplicate; None: not (yet) known (too few answers)."""
        with self._lock:
            return self._after

    def watch(self, race: Race, launch: Callable[[], None]) -> None:
        """A request went: ``launch`` runs on a hedge thread once it has taken longer than the
        deadline (as known by then: a request sent before enough answers were seen is hedged by
        the figure they give later), unless the race is over first."""
        started = time.monotonic()
        with self._lock:
            self.requests += 1
            self._live[race] = (started, launch)
            deep_after, after = self._deep_after, self._after
        if deep_after is not None and deep_after < (after if after is not None else float("inf")):
            self._clock.at(started + deep_after, lambda: self._deep_tail(race))
        self._due(race, started, launch)

    def forget(self, race: Race) -> None:
        """A request is over (answered or failed): in the deep tail, the requests left that are
        older than the deep tail's deadline get their duplicates now."""
        with self._lock:
            self._live.pop(race, None)
        self._deep_tail(None)

    def _deep_tail(self, race: Race | None) -> None:
        """Duplicates for the deep tail: ``race`` (its deep-tail deadline came), or (None) every
        request in flight older than that deadline; nothing unless the worker is in its deep tail."""
        with self._lock:
            after = self._deep_after
            if after is None or after < MIN_DEADLINE_S or len(self._live) > DEEP_TAIL:
                return
            now = time.monotonic()
            candidates = [race] if race is not None else list(self._live)
            due = [
                (r, self._live[r][1])
                for r in candidates
                if r in self._live and not r.launched and now - self._live[r][0] >= after
            ]
        if due and self.allowed():
            for r, launch in due:
                self._fire(r, launch)

    def _due(self, race: Race, started: float, launch: Callable[[], None]) -> None:
        if race.done.is_set():
            return
        after = self.deadline()
        if after is not None and after < MIN_DEADLINE_S:
            return  # answers this fast: waiting costs less than a request
        now = time.monotonic()
        when = now + UNKNOWN_RECHECK_S if after is None else started + after
        if when > now:
            self._clock.at(when, lambda: self._due(race, started, launch))
        else:
            self._fire(race, launch)

    def _fire(self, race: Race, launch: Callable[[], None]) -> None:
        """A deadline passed: the duplicate goes now, or (before the tail) waits for the tail."""
        if race.done.is_set() or race.pending or race.launched:
            return
        if not self.allowed():
            with self._lock:
                self._waiting.append((race, launch))
                if self._rechecking:
                    return
                self._rechecking = True
            self._clock.at(time.monotonic() + RECHECK_S, self._recheck)
            return
        with self._lock:
            if race.pending or self.hedges >= self.share * self.requests:
                return
            self.hedges += 1
            if self._pool is None:
                self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="hedge")
            pool = self._pool
            race.hedged = race.pending = True

        def run() -> None:
            try:
                launch()
            finally:
                race.pending = False  # sent, or given up: a later deadline may try again

        pool.submit(run)

    def _recheck(self) -> None:
        """The requests whose deadline passed before the tail: hedged once it has come."""
        with self._lock:
            self._waiting = [(race, launch) for race, launch in self._waiting if not race.done.is_set()]
            if not self._waiting:
                self._rechecking = False
                return
        if not self.allowed():
            self._clock.at(time.monotonic() + RECHECK_S, self._recheck)
            return
        with self._lock:
            waiting, self._waiting, self._rechecking = self._waiting, [], False
        for race, launch in waiting:
            self._fire(race, launch)

    def won(self) -> None:
        with self._lock:
            self.wins += 1

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {"hedges": self.hedges, "hedge_wins": self.wins, "hedges_without_room": self.without_room}

    def close(self) -> None:
        self._clock.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


class _Clock:
    """One thread that calls each callback at its time (a heap of deadlines)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def at(self, when: float, callback: Callable[[], None]) -> None:
        with self._cond:
            ident = next(self._ids)
            heapq.heappush(self._heap, (when, ident, callback))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hedge-clock", daemon=True)
                self._thread.start()
            if self._heap[0][1] == ident:
                self._cond.notify()  # the new deadline is the first: the clock sleeps less (else it sleeps on)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._stopped:
                    return
                _, _, callback = heapq.heappop(self._heap)
            callback()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
