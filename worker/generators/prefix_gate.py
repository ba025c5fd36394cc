"""One writer per cached prompt prefix: the others wait until its answer has begun.

The API makes a cache entry readable only once the answer of the request that writes it has
begun. Requests sent together with the same uncached prefix would each pay the cache write (1.25x
the input price, 2x with the 1-hour TTL) instead of one write and cheap reads. So the first request
of a prefix goes alone; as soon as its answer starts (the stream's ``message_start``), every
request waiting on that prefix goes, and reads it.

A request names its prefixes by keys (one per cache breakpoint: the skill shared by every agent,
then an agent's vocabulary). It may go when each of its keys is *warm* (a writer's answer began,
recently enough that the entry has not expired) or *free* (nobody writes it: this request becomes
its writer). A writer that fails before its answer begins frees its keys for the next request.

>>> gate = PrefixGate(ttl=300.0)
>>> first = gate.enter(["skill", "agent 1"])
>>> gate.ready(["skill", "agent 2"])  # the skill is being written: wait
False
>>> first.begun()
>>> gate.ready(["skill", "agent 2"]), gate.ready(["skill", "agent 1"])
(True, True)
>>> first.close()
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

#: Share of the TTL after which a warm prefix is written again rather than trusted.
TTL_MARGIN = 0.9
WAIT_TICK = 0.2


@dataclass
class _Entry:
    writer: object | None = None  # the Turn writing it, or None once warm
    last_used: float = 0.0  # monotonic time of its writer's start or its last reader


class Turn:
    """A request's pass through the gate: call :meth:`begun` when its answer starts and
    :meth:`close` when it is over (success or not). A context manager."""

    def __init__(self, gate: PrefixGate, keys: list[Hashable], writes: list[Hashable]) -> None:
        self.gate, self.keys, self.writes = gate, keys, writes
        self._begun = False

    @property
    def writer(self) -> bool:
        """True when this request writes at least one of its prefixes."""
        return bool(self.writes)

    def begun(self) -> None:
        if not self._begun:
            self._begun = True
            self.gate._begun(self)

    def close(self) -> None:
        self.gate._close(self)

    def __enter__(self) -> Turn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PrefixGate:
    """Thread-safe; one per generator (a worker process). ``ttl`` in seconds (the cache's)."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._cond = threading.Condition()
        self._entries: dict[Hashable, _Entry] = {}
        #: Called (outside the gate's lock) when a prefix turns warm or free: whoever hands out
        #: work by prefix looks again.
        self.listeners: list[Callable[[], None]] = []

    def _state(self, key: Hashable, now: float) -> str:
        entry = self._entries.get(key)
        if entry is None:
            return "free"
        if entry.writer is not None:
            return "writing"
        return "warm" if now - entry.last_used < self.ttl * TTL_MARGIN else "free"

    def state(self, keys: Iterable[Hashable]) -> str:
        """``"writing"`` when a writer's answer has not begun for one of the keys, else ``"free"``
        when one has no warm entry (the next request writes it), else ``"warm"``."""
        now = time.monotonic()
        with self._cond:
            states = {self._state(key, now) for key in keys}
        return "writing" if "writing" in states else "free" if "free" in states else "warm"

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()

    def ready(self, keys: Iterable[Hashable]) -> bool:
        """May a request with these prefixes go now (none is being written by another)?"""
        now = time.monotonic()
        with self._cond:
            return all(self._state(key, now) != "writing" for key in keys)

    def enter(self, keys: Iterable[Hashable], stop: threading.Event | None = None) -> Turn:
        """Wait until the request may go, then take the writer's place of its free prefixes.
        Returns at once when ``stop`` is set (the request is then not sent)."""
        wanted = list(dict.fromkeys(keys))
        with self._cond:
            while True:
                now = time.monotonic()
                states = [self._state(key, now) for key in wanted]
                if "writing" not in states or (stop is not None and stop.is_set()):
                    break
                self._cond.wait(WAIT_TICK)
            turn = Turn(self, wanted, [key for key, state in zip(wanted, states, strict=True) if state == "free"])
            for key, state in zip(wanted, states, strict=True):
                entry = self._entries.setdefault(key, _Entry())
                if state == "free":
                    entry.writer = turn
                entry.last_used = now
        return turn

    def _begun(self, turn: Turn) -> None:
        with self._cond:
            for key in turn.writes:
                entry = self._entries.get(key)
                if entry is not None and entry.writer is turn:
                    entry.writer = None  # warm from now on
            self._cond.notify_all()
        if turn.writes:
            self._changed()

    def _close(self, turn: Turn) -> None:
        """A writer whose answer never began frees its prefixes for the next request."""
        freed = False
        with self._cond:
            for key in turn.writes:
                entry = self._entries.get(key)
                if entry is not None and entry.writer is turn:
                    del self._entries[key]
                    freed = True
            self._cond.notify_all()
        if freed:
            self._changed()

    def warm(self, keys: Iterable[Hashable]) -> None:
        """Mark prefixes warm without a request through the gate (written elsewhere)."""
        now = time.monotonic()
        with self._cond:
            for key in keys:
                entry = self._entries.setdefault(key, _Entry())
                if entry.writer is None:
                    entry.last_used = now
            self._cond.notify_all()
