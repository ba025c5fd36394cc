"""How many requests a worker has in flight, and when the next may go: the API's own signals.

Two layers, both asked before every request (:meth:`Pacer.acquire`) and told about every answer
(:meth:`Pacer.observe`, called by the client middleware for each HTTP attempt, SDK retries
included):

- **An adaptive in-flight limit per worker**: it starts at ``initial`` and grows by one with every
  successful answer (so it can double each round trip); a 429 or 529 halves it, and a
  ``retry-after`` pauses every new request (of every worker) that long. ``max_in_flight`` caps it.
  It is the safety net: the buckets below keep the run under the limits the API announces, so a
  429 means they were off (another client on the account, a limit that is not announced, such as
  the acceleration limit), and the quick regrowth costs little once the cause is gone.
- **The account's limits, shared by every worker of the run** (:class:`SharedBuckets`): three
  token buckets (requests, input tokens, output tokens) that mirror the API's, learnt from the
  ``anthropic-ratelimit-*`` headers (a bucket refills at its limit per minute and holds at most
  the most the API ever reported remaining: a minute's quota, or less where the API enforces
  over shorter periods), corrected down to the ``-remaining`` the API reports in every answer, and
  kept in one small file that every worker of the run reads and writes under a lock. A request
  takes its cost (one request, its uncached input, its ``max_tokens`` of output, which the API
  reserves until the answer ends) before it goes, and gives back the output it did not use. So
  workers never together send more than the account allows, whichever of them has work left: a
  worker in its tail leaves the headroom to the others instead of holding a fixed share.

Until the first answer's headers arrive the buckets are unknown and only the in-flight limit
applies (each worker's first request goes alone anyway: it writes the cached prefix).

**The machine is shared too.** A segment's workers start a stagger apart and have the same
number of baskets, so without more the first ends a stagger or two before the last, which then
works on alone while the machine idles. So the workers of a segment that have work left share
their in-flight budget, ``max_in_flight`` each, in proportion to the baskets each has left
(published in the same file, :meth:`SharedBuckets.share`): the worker that started last, with the
most left, gets the most, and they end closer together. A worker's share stays between
:data:`SHARE_MIN` and :data:`SHARE_MAX` times ``max_in_flight``.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The run's shared buckets, in its phase5_segments folder.
SHARED_LIMITS_FILE = "api_limits.bin"
WAIT_TICK = 0.05  # longest sleep between two looks at the buckets
SLOT_WAIT = 0.5  # longest wait for a slot before looking at the stop event
#: Share of each bucket left untaken: the API's count of requests in flight elsewhere (another
#: worker's just sent, the answers that have not given back their reservation yet) lags ours.
RESERVE = 0.05
#: The ramp after a quiet spell (see :class:`SharedBuckets`).
RAMP_FLOOR = 0.4
RAMP_FACTOR = 1.5
MIN_LIMIT = 1.0
#: A worker's share of its segment's in-flight budget, as a multiple of ``max_in_flight``: its
#: bounds, how often it is worked out again, and how long a worker that stopped saying what it
#: has left still counts (one that ended or was killed).
SHARE_MIN = 0.5
SHARE_MAX = 1.5
SHARE_REFRESH_S = 0.05
SHARE_FRESH_S = 5.0
#: Where the workers' shares live in the shared file (after the buckets' state): one slot per
#: orchestrator number (segment, orchestrator, baskets left, wall time).
SHARE_OFFSET = 512
SHARE_SLOTS = 64
_SHARE = struct.Struct("<dddd")


@dataclass(frozen=True)
class Cost:
    """What one request takes from the account's limits."""

    input_tokens: float
    output_tokens: float  # max_tokens: reserved until the answer ends

    def as_tuple(self) -> tuple[float, float, float]:
        return (1.0, self.input_tokens, self.output_tokens)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            with contextlib.suppress(ValueError):
                return max(0.0, float(value) * scale)
    return None


class _State:
    """The shared file's numbers, by name (one struct of doubles)."""

    FIELDS = (
        "version",
        "at",  # wall time the levels were last brought up to date
        "level_requests",
        "level_input",
        "level_output",
        "limit_requests",  # a minute, as the headers announce them (0: not known yet)
        "limit_input",
        "limit_output",
        "paused_until",
        "capacity_requests",  # the most a bucket holds: the most the API ever said remains
        "capacity_input",
        "capacity_output",
        "window_start",  # the ramp's current window and how many requests went in it and the one before
        "window_count",
        "previous_count",
        "answers_seen",  # answers of the run so far, and the largest output among them (max_tokens learns it)
        "largest_output",
    )
    FORMAT = struct.Struct("<" + "d" * len(FIELDS))
    VERSION = 4.0

    def __init__(self, values: list[float] | None = None) -> None:
        self.values = values if values is not None else [self.VERSION] + [0.0] * (len(self.FIELDS) - 1)

    def __getattr__(self, name: str) -> float:
        return self.values[self.FIELDS.index(name)]

    def __setattr__(self, name: str, value: float) -> None:
        if name == "values":
            object.__setattr__(self, name, value)
        else:
            self.values[self.FIELDS.index(name)] = value

    def get(self, kind: str, bucket: str) -> float:
        return getattr(self, f"{kind}_{bucket}")

    def put(self, kind: str, bucket: str, value: float) -> None:
        setattr(self, f"{kind}_{bucket}", value)


#: The three buckets, by their header names and their names in the state.
_BUCKETS = (("requests", "requests"), ("input-tokens", "input"), ("output-tokens", "output"))


class SharedBuckets:
    """The account's three buckets, in ``path`` (shared by the run's workers; None: this process
    only). Thread- and process-safe; every operation is one locked read-modify-write of 120 bytes.
    The file is advisory state: a missing, foreign or damaged one is simply started afresh.

    Besides the buckets, a ramp: the API refuses a sudden jump in traffic (its acceleration limit,
    which no header announces), so after a quiet spell the run sends at most ``RAMP_FLOOR`` of a
    bucket's worth of requests in the time the bucket takes to refill, then at most
    ``RAMP_FACTOR`` times what went in the window before."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._state = _State()  # the in-process copy
        self._shares = [(0.0, 0.0, 0.0, 0.0)] * SHARE_SLOTS  # the same, of the workers' shares
        self._fd: int | None = None
        #: Why this process waited, and how often: "pause", "ramp", or a bucket's name.
        self.waits: dict[str, int] = {}
        if path is not None:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    @contextlib.contextmanager
    def _locked(self) -> Any:
        """The state, refilled to now, under the thread lock and (shared) the file lock; written back."""
        with self._lock:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                state = self._read()
                now = time.time()
                for _, name in _BUCKETS:
                    limit = state.get("limit", name)
                    if limit > 0:
                        level = state.get("level", name) + max(0.0, now - state.at) * limit / 60.0
                        state.put("level", name, min(state.get("capacity", name), level))
                state.at = now
                yield state
                self._write(state)
            finally:
                if self._fd is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _read(self) -> _State:
        if self._fd is None:
            return _State(list(self._state.values))
        raw = os.pread(self._fd, _State.FORMAT.size, 0)
        if len(raw) == _State.FORMAT.size:
            values = list(_State.FORMAT.unpack(raw))
            if values[0] == _State.VERSION and all(math.isfinite(v) for v in values):
                return _State(values)
        return _State()

    def _write(self, state: _State) -> None:
        if self._fd is None:
            self._state = state
        else:
            # A small write under the lock: readers never see it half done, and the state is only
            # advisory (a damaged file is started afresh), so it needs no fsync.
            os.pwrite(self._fd, _State.FORMAT.pack(*state.values), 0)

    def take(self, cost: Cost) -> float:
        """Take ``cost`` now and return 0, or take nothing and return the seconds to wait (for
        the pause, the ramp, or the buckets to hold the cost). Unknown limits never make anyone
        wait."""
        with self._locked() as state:
            now = state.at
            if state.paused_until > now:
                return self._wait("pause", state.paused_until - now)
            ramp = self._ramp_wait(state, now)
            if ramp > 0:
                return self._wait("ramp", ramp)
            waits = []
            for (header, name), amount in zip(_BUCKETS, cost.as_tuple(), strict=True):
                limit, level, capacity = (state.get(kind, name) for kind in ("limit", "level", "capacity"))
                need = amount + RESERVE * capacity  # a margin for what the headers have not said yet
                if limit <= 0 or need <= level or (level >= capacity and amount > capacity * (1 - RESERVE)):
                    continue
                waits.append(((min(need, capacity) - level) / (limit / 60.0), header))
            if waits:
                wait, header = max(waits)
                return self._wait(header, wait)
            for (_, name), amount in zip(_BUCKETS, cost.as_tuple(), strict=True):
                if state.get("limit", name) > 0:
                    state.put("level", name, state.get("level", name) - amount)
            state.window_count += 1
            return 0.0

    def _wait(self, why: str, seconds: float) -> float:
        self.waits[why] = self.waits.get(why, 0) + 1
        return seconds

    @staticmethod
    def _ramp_wait(state: _State, now: float) -> float:
        limit, capacity = state.limit_requests, state.capacity_requests
        if limit <= 0 or capacity <= 0:
            return 0.0
        window = capacity / (limit / 60.0)  # the time a full bucket takes to refill
        if now - state.window_start >= window:
            recent = now - state.window_start < 2 * window
            state.previous_count = state.window_count if recent else 0.0
            state.window_count, state.window_start = 0.0, now
        allowed = max(RAMP_FLOOR * capacity, RAMP_FACTOR * state.previous_count)
        return 0.0 if state.window_count + 1 <= allowed else state.window_start + window - now

    def share(self, segment: int, orch: int, left: int) -> tuple[float, int]:
        """Publish that orchestrator ``orch`` of ``segment`` has ``left`` baskets to make; return
        how many the segment's workers with work left, heard from in the last
        :data:`SHARE_FRESH_S` seconds, have together (this one included), and how many they are."""
        if not 1 <= orch <= SHARE_SLOTS:
            return 0.0, 0
        with self._locked():  # the file's lock (the buckets' state is written back unchanged)
            now = time.time()
            slots = self._read_shares()
            slots[orch - 1] = (float(segment), float(orch), float(left), now)
            if self._fd is None:
                self._shares = slots
            else:
                os.pwrite(self._fd, _SHARE.pack(*slots[orch - 1]), SHARE_OFFSET + (orch - 1) * _SHARE.size)
            live = [n for seg, _, n, at in slots if seg == segment and n > 0 and 0 <= now - at < SHARE_FRESH_S]
            return sum(live), len(live)

    def _read_shares(self) -> list[tuple[float, float, float, float]]:
        empty = (0.0, 0.0, 0.0, 0.0)
        if self._fd is None:
            return list(self._shares)
        raw = os.pread(self._fd, _SHARE.size * SHARE_SLOTS, SHARE_OFFSET).ljust(_SHARE.size * SHARE_SLOTS, b"\0")
        slots = [_SHARE.unpack_from(raw, i * _SHARE.size) for i in range(SHARE_SLOTS)]
        return [slot if all(math.isfinite(v) for v in slot) else empty for slot in slots]

    def give_back(self, output_tokens: float) -> None:
        """Output tokens reserved for an answer and not used by it."""
        if output_tokens > 0:
            with self._locked() as state:
                if state.limit_output > 0:
                    state.level_output = min(state.capacity_output, state.level_output + output_tokens)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Learn the limits from an answer's headers and bring each level down to what the API says
        remains (never up: requests this run sent since may not be counted there yet)."""
        found: list[tuple[str, float, float]] = []
        for header, name in _BUCKETS:
            announced = headers.get(f"anthropic-ratelimit-{header}-limit")
            left = headers.get(f"anthropic-ratelimit-{header}-remaining")
            with contextlib.suppress(ValueError, TypeError):
                if announced and left:
                    found.append((name, float(announced), float(left)))
        if not found:
            return
        with self._locked() as state:
            for name, limit, remaining in found:
                if state.get("limit", name) != limit:  # first sight (or a new tier): start from what remains
                    state.put("limit", name, limit)
                    state.put("level", name, remaining)
                    state.put("capacity", name, min(limit, remaining + 1))
                else:
                    state.put("level", name, min(state.get("level", name), remaining))
                    state.put("capacity", name, min(limit, max(state.get("capacity", name), remaining + 1)))

    def note_output(self, tokens: float) -> None:
        """An answer's output tokens (the run's largest output sizes ``max_tokens``)."""
        with self._locked() as state:
            state.answers_seen += 1
            state.largest_output = max(state.largest_output, tokens)

    def outputs(self) -> tuple[int, float]:
        """The run's answers so far and the largest output among them."""
        with self._locked() as state:
            return int(state.answers_seen), state.largest_output

    def pause(self, seconds: float) -> None:
        """No request of the run goes before ``seconds`` from now (a 429's ``retry-after``)."""
        with self._locked() as state:
            state.paused_until = max(state.paused_until, state.at + seconds)

    def view(self) -> dict[str, Any]:
        with self._locked() as state:
            return {
                "limits_per_minute": {h: state.get("limit", n) for h, n in _BUCKETS},
                "capacities": {h: state.get("capacity", n) for h, n in _BUCKETS},
                "levels": {h: round(state.get("level", n), 1) for h, n in _BUCKETS},
                "paused_for_s": round(max(0.0, state.paused_until - state.at), 3),
            }

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Pacer:
    """One worker's gate for requests; thread-safe. ``buckets`` may be shared with other workers.

    :meth:`slot` bounds the baskets in progress (each has one request in flight at a time, so
    this is the in-flight limit); :meth:`take` waits, before each request, for the account's
    buckets to hold its cost; :meth:`observe` hears every answer."""

    def __init__(self, max_in_flight: int, buckets: SharedBuckets | None = None, initial: int = 16) -> None:
        self.max_in_flight = max(1, max_in_flight)
        #: The most this worker may have in flight: ``max_in_flight``, or more while it shares a
        #: segment's budget (:meth:`share_segment`).
        self.most_in_flight = self.max_in_flight
        self.buckets = buckets or SharedBuckets(None)
        self.limit = float(min(initial, self.max_in_flight))
        self.share_cap = float(self.max_in_flight)
        self._sharing: tuple[int, int, Callable[[], int]] | None = None  # segment, orchestrator, baskets left
        self._share_at = -math.inf
        self.in_flight = 0
        self.peak_in_flight = 0
        self.sent = 0
        self.answered = 0  # 2xx answers seen
        self.rate_limited = 0  # 429 answers seen (SDK retries included)
        self.overloaded = 0  # 529 answers seen
        self.waited_s = 0.0  # time requests spent waiting for the buckets or a pause
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def slot(self, stop: threading.Event | None = None) -> Any:
        """A place under the in-flight limit for one basket; ``as`` gives False when ``stop`` was
        set while waiting (then do nothing)."""
        entered = self._enter(stop)
        try:
            yield entered
        finally:
            if entered:
                with self._cond:
                    self.in_flight -= 1
                    self._cond.notify()

    def share_segment(self, segment: int, orch: int, orchestrators: int, left: Callable[[], int]) -> None:
        """Share the in-flight budget of the segment's workers with work left (``max_in_flight``
        each) in proportion to the baskets each has ``left`` (see the module doc); nothing to share
        when the segment has one orchestrator."""
        if orchestrators > 1 and 1 <= orch <= SHARE_SLOTS:
            self._sharing = (segment, orch, left)
            self.most_in_flight = math.ceil(self.max_in_flight * SHARE_MAX)

    def _refresh_share(self) -> None:
        """This worker's share, worked out again (at most every :data:`SHARE_REFRESH_S`)."""
        if self._sharing is None:
            return
        now = time.monotonic()
        with self._cond:
            if now - self._share_at < SHARE_REFRESH_S:
                return
            self._share_at = now
        segment, orch, left = self._sharing
        mine = left()
        total, workers = self.buckets.share(segment, orch, mine)
        share = self.max_in_flight * workers * mine / total if total > 0 else self.max_in_flight
        share = min(max(share, SHARE_MIN * self.max_in_flight), SHARE_MAX * self.max_in_flight)
        with self._cond:
            grew = int(share) > int(self.share_cap)
            self.share_cap = share
            if grew:
                self._cond.notify_all()

    def _enter(self, stop: threading.Event | None) -> bool:
        while True:
            self._refresh_share()
            with self._cond:
                if self.in_flight < int(min(self.limit, self.share_cap)):
                    self.in_flight += 1
                    self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                    return True
                if stop is not None and stop.is_set():
                    return False
                self._cond.wait(SLOT_WAIT)  # woken by a release; the timeout checks the stop and the share

    def take(self, cost: Cost, stop: threading.Event | None = None) -> bool:
        """Wait for the account's buckets to hold ``cost`` and take it; False when ``stop`` was
        set meanwhile (nothing taken)."""
        started = time.monotonic()
        while (wait := self.buckets.take(cost)) > 0:
            if stop is not None and stop.wait(min(wait, WAIT_TICK)):
                return False
            if stop is None:
                time.sleep(min(wait, WAIT_TICK))
        with self._cond:
            self.sent += 1
            self.waited_s += time.monotonic() - started
        return True

    def try_take(self, cost: Cost) -> bool:
        """Take ``cost`` if the buckets hold it now (a hedge never waits)."""
        if self.buckets.take(cost) > 0:
            return False
        with self._cond:
            self.sent += 1
        return True

    def give_back(self, unused_output: float) -> None:
        """Reserved output tokens an answer did not use go back to the account's bucket."""
        self.buckets.give_back(unused_output)

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Every HTTP answer: its headers calibrate the buckets; success grows the limit, 429 and
        529 halve it, and ``retry-after`` pauses the whole run's new requests."""
        self.buckets.observe(headers)
        if status in (429, 529):
            wait = _retry_after(headers)
            if wait:
                self.buckets.pause(wait)
            with self._cond:
                if status == 429:
                    self.rate_limited += 1
                else:
                    self.overloaded += 1
                self.limit = max(MIN_LIMIT, self.limit / 2)
        elif 200 <= status < 300:
            with self._cond:
                self.answered += 1
                before = int(self.limit)
                self.limit = min(float(self.most_in_flight), self.limit + 1.0)
                if int(self.limit) > before:
                    self._cond.notify()

    def to_json(self) -> dict[str, Any]:
        with self._cond:
            return {
                "limit": round(self.limit, 1),
                "in_flight": self.in_flight,
                "peak_in_flight": self.peak_in_flight,
                "max_in_flight": self.max_in_flight,
                "share": round(self.share_cap, 1) if self._sharing is not None else None,
                "sent": self.sent,
                "answered": self.answered,
                "rate_limited": self.rate_limited,
                "overloaded": self.overloaded,
                "waited_s": round(self.waited_s, 2),
                "waits": dict(self.buckets.waits),
            }


def limit_heap_growth() -> None:
    """With many requests in flight, each thread's transient 50-100 KB request bodies make glibc
    open more malloc arenas and keep freed blocks: a worker's memory grows by ~0.3 MB per request
    in flight. Two arenas, and blocks from 32 KB given back to the system when freed, keep most of
    that in check. Nothing happens where glibc is not the allocator."""
    import ctypes

    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8  # mallopt parameters (malloc.h)
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(m_arena_max, 2)
        libc.mallopt(m_mmap_threshold, 32 * 1024)
        libc.mallopt(m_trim_threshold, 256 * 1024)
    except (OSError, AttributeError):
        return
