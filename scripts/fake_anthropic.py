#!/usr/bin/env python3
"""A local stand-in for the Anthropic Messages API, for tests and benchmarks (SPEC §5).

It speaks ``POST /v1/messages`` well enough for the real SDK pointed at it with
``ANTHROPIC_BASE_URL``: it answers the forced ``submit_e_phrases`` tool call with plausible
e-phrases for the LEGO named in the request's ``LEGO_ID:`` line, built from the given course's
own seeds and LEGOs available at that position, and reports token usage (about 4 characters a
token) with prompt caching: the first request with a given cached prefix writes the cache, later
ones read it.

Faults, by rate (deterministic for a ``--seed``: drawn per LEGO, round and attempt, whatever the
order requests arrive in) and by schedule (``--fault-first 429:2``: the first two requests;
``--fault-first batch_expired:2``: the first two requests of batches):

    429           rate limited, with a ``retry-after`` header (``--retry-after`` seconds)
    500, 529      server error, overloaded
    hang          no answer for ``--hang-seconds`` (past the client timeout)
    prose         text instead of the tool call
    malformed     tool input that does not fit the schema
    future        an extra phrase using a LEGO from a later position
    no_operative  an extra phrase without the operative LEGO
    hostile       every known text ends in terminal escapes, NUL, a bidi override, tmux
                  formats and rich markup (:data:`HOSTILE_TEXT`)
    hostile_error a 500 whose error message holds the same

The Message Batches API (``/v1/messages/batches``: create, retrieve, results as JSON lines,
cancel) runs each request of a batch through the same :meth:`FakeAPI.answer`, in the order
sent, once the batch ends ``--batch-delay`` seconds after its creation (a cancel ends it at the
next look, with every request canceled). Per-request batch faults, drawn per custom_id, round
and attempt like the others (a transport fault of a batch request becomes an errored result):

    batch_errored an ``errored`` result (api_error)
    batch_expired an ``expired`` result
    batch_ok      no fault (to place the faults of a ``--fault-first`` schedule)

Every request is appended to ``--log`` as one JSON line (op, time, lego_id, round, repair,
attempt, fault, status, prefix_hash, usage, ...); ``op`` is ``message`` for ``/v1/messages``,
``batch_create``/``batch_retrieve``/``batch_results``/``batch_cancel`` for the Batches calls and
``batch_request`` for each request of an ended batch (with its batch_id, custom_id and result).
Request headers are never logged (they carry the key).
The server stops after ``--max-seconds`` and on SIGTERM/SIGINT.

Routes live in :data:`ROUTES`; :meth:`FakeAPI.answer` turns one Messages request body into an
answer independently of HTTP, for ``/v1/messages`` and for each request of a batch.

    python scripts/fake_anthropic.py --course examples/courses/spa_demo --log /tmp/fake.jsonl
    python scripts/fake_anthropic.py --course ... --batch-delay 2 --fault batch_expired:0.1 --seed 3
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import random
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from worker.course import Course, CourseLego  # noqa: E402
from worker.models import Pair  # noqa: E402

TOOL_NAME = "submit_e_phrases"
TRANSPORT_FAULTS = ("429", "500", "529", "hang", "hostile_error")
CONTENT_FAULTS = ("prose", "malformed", "future", "no_operative", "hostile")
#: What a hostile model or API error may carry: an OSC sequence that sets a terminal's title, NUL,
#: a right-to-left override, a tmux command substitution and format, and rich markup.
HOSTILE_TEXT = "\x1b]0;pwned-title\x07\x00\u202e#(touch pwned_api)#{session_name}[/red][bold]"
BATCH_FAULTS = ("batch_errored", "batch_expired", "batch_ok")
FAULTS = TRANSPORT_FAULTS + CONTENT_FAULTS + BATCH_FAULTS
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_BATCH_REQUESTS = 100_000
LEGO_ID_LINE = re.compile(r"LEGO_ID:\s*(S\d{4}L\d{2})")
#: Phrases the fake "model" writes in a first answer besides a seed sentence; fewer than a
#: basket holds, so any failing phrase makes the client ask for a repair.
FIRST_ANSWER = 3
REPAIR_ANSWER = 2
#: Bounded searches for a future / non-operative phrase.
SEARCH_LIMIT = 40


def tokens(text: str) -> int:
    """A rough token count: about four characters a token."""
    return max(1, len(text) // 4) if text else 0


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def digest(value: Any) -> str:
    return hashlib.sha256(canonical(value).encode("utf-8")).hexdigest()[:16]


def _text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


#: Blocks with a text at least this long have their canonical JSON cached (:class:`CanonicalParts`).
BIG_TEXT = 1000
MAX_BIG_TEXTS = 256  # canonical texts of big blocks remembered
MAX_PREFIXES = 4096  # prefix digests remembered


class CanonicalParts:
    """:func:`canonical` of a list, built from its items' canonical texts, the big text blocks'
    (the skill, the vocabulary: the same in every request of an agent) computed once.

    ``canonical([a, b])`` is ``"[" + canonical(a) + "," + canonical(b) + "]"`` (no spaces, keys
    sorted within each item), so any prefix of the list is a join of cached pieces: a request
    costs no JSON encoding of its 50 KB system prompt, however many prefixes it has."""

    def __init__(self) -> None:
        self._big: dict[tuple[str, str], str] = {}  # (text, the block's other fields) -> canonical(block)
        self._digests: dict[tuple[str, ...], tuple[str, int]] = {}

    def item(self, value: Any) -> str:
        text = value.get("text") if isinstance(value, dict) else None
        if not isinstance(text, str) or len(text) < BIG_TEXT:
            return canonical(value)
        key = (text, canonical({k: v for k, v in value.items() if k != "text"}))
        found = self._big.get(key)
        if found is None:
            if len(self._big) > MAX_BIG_TEXTS:
                self._big.clear()  # a bound for long runs (an agent's vocabulary is up to ~50 KB)
            found = self._big[key] = canonical(value)  # same value if two threads race: no lock needed
        return found

    def items(self, values: list[Any]) -> list[str]:
        return [self.item(value) for value in values]

    def digest_and_tokens(self, items: list[str]) -> tuple[str, int]:
        """(:func:`digest`, :func:`tokens`) of the list whose items' canonical texts are ``items``,
        remembered: a prefix is the same few cached strings in every request (a tuple of them
        hashes and compares cheaply, their hashes being cached in the strings)."""
        key = tuple(items)
        found = self._digests.get(key)
        if found is None:
            if len(self._digests) > MAX_PREFIXES:
                self._digests.clear()  # a bound for long runs: they are cheap to make again
            text = join_canonical(items)
            found = self._digests[key] = (_text_digest(text), tokens(text))
        return found


def join_canonical(items: list[str]) -> str:
    """:func:`canonical` of a list whose items' canonical texts are ``items``."""
    return "[" + ",".join(items) + "]"


class ApiError(Exception):
    """An HTTP error answer in the API's error shape."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers or {}

    def body(self) -> dict[str, Any]:
        return {"type": "error", "error": {"type": self.kind, "message": self.message}}


# -- plausible phrases from the course ------------------------------------------------------------


class Phrasebook:
    """E-phrases for a LEGO from the course's own seeds: windows of its seed ending at it, and
    the LEGO joined with spans of earlier seeds. Deterministic for a seed value."""

    def __init__(self, course: Course, seed: int) -> None:
        self.course = course
        self.seed = seed
        self.seed_index = {s.seed_id: i for i, s in enumerate(course.source.seeds)}
        # Pools, future and non-operative phrases depend on the LEGO alone (and the seed): made
        # once per LEGO, and a pool only as far as answers read it (an answer takes its first
        # few phrases), so a request costs a few tilings at most, not ~40.
        self._pools: dict[str, LazyPool] = {}
        self._futures: dict[str, Pair | None] = {}
        self._no_operatives: dict[str, Pair | None] = {}
        self._lock = threading.Lock()  # a pool's generator must not run in two threads at once

    def position_of(self, lego_id: str) -> int:
        return self.course.by_id[self.course.canonical_of[lego_id]].position

    def pair(self, legos: list[CourseLego]) -> Pair:
        def inner(text: str) -> str:  # "Dónde está" inside a phrase reads "dónde está"
            return text[:1].lower() + text[1:] if text[1:2].islower() else text

        target = self.course.join([legos[0].target] + [inner(lego.target) for lego in legos[1:]])
        known = " ".join([legos[0].known] + [inner(lego.known) for lego in legos[1:]])
        return (target[:1].upper() + target[1:] + ".", known[:1].upper() + known[1:] + ".")

    def seed_legos(self, index: int) -> list[CourseLego]:
        return [self.course.legos[self.position_of(lego.id) - 1] for lego in self.course.source.seeds[index].legos]

    def pool(self, lego: CourseLego) -> list[Pair]:
        """Candidate phrases for ``lego``, all tiling with LEGOs available at its position."""
        return self.phrases(lego, None)

    def phrases(self, lego: CourseLego, count: int | None, keep: Callable[[Pair], bool] | None = None) -> list[Pair]:
        """The first ``count`` (None: all) phrases of :meth:`pool` that ``keep`` accepts."""
        with self._lock:
            pool = self._pools.get(lego.id)
            if pool is None:
                pool = self._pools[lego.id] = LazyPool(
                    self._candidates(lego), lambda pair: self.course.tiler.tile(pair[0], lego.position).ok
                )
            return pool.first(count, keep)

    def _candidates(self, lego: CourseLego) -> Iterator[Pair]:
        """The pool's candidates in order, before the tiling check (and duplicates in it)."""
        n = lego.position
        rng = random.Random(f"{self.seed}|pool|{lego.id}")
        own = self.seed_legos(lego.seed_index)
        at = next(i for i, item in enumerate(own) if item.position == n)
        for start in range(at):  # windows of its own seed that end at it, longest first
            window = own[start : at + 1]
            if all(item.position <= n for item in window):
                yield self.pair(window)
        earlier = list(range(lego.seed_index - 1, -1, -1))[:SEARCH_LIMIT]
        rng.shuffle(earlier)
        for index in earlier:  # the LEGO with the head or the tail of an earlier seed
            other = [item for item in self.seed_legos(index) if item.position < n]
            if not other:
                continue
            size = rng.randint(1, min(3, len(other)))
            yield self.pair(other[:size] + [lego]) if rng.random() < 0.5 else self.pair([lego] + other[-size:])

    def future(self, lego: CourseLego) -> Pair | None:
        """The LEGO with one introduced later: fails GATE."""
        if lego.id not in self._futures:
            self._futures[lego.id] = self._make_future(lego)
        return self._futures[lego.id]

    def no_operative(self, lego: CourseLego) -> Pair | None:
        """An earlier seed's LEGOs without this one: fails GATE (the operative LEGO is missing)."""
        if lego.id not in self._no_operatives:
            self._no_operatives[lego.id] = self._make_no_operative(lego)
        return self._no_operatives[lego.id]

    def _make_future(self, lego: CourseLego) -> Pair | None:
        for later in self.course.legos[lego.position : lego.position + SEARCH_LIMIT]:
            pair = self.pair([lego, later])
            if not self.course.tiler.tile(pair[0], lego.position).ok:
                return pair
        return None

    def _make_no_operative(self, lego: CourseLego) -> Pair | None:
        for index in range(lego.seed_index - 1, max(-1, lego.seed_index - 1 - SEARCH_LIMIT), -1):
            pair = self.pair(self.seed_legos(index))
            if not self.course.tiler.tile(pair[0], lego.position).ok:
                return pair
        return None


class LazyPool:
    """A LEGO's pool, checked only as far as it is read: candidates in order, the first of each
    target text (case aside) kept, and kept only if it passes ``ok`` (it tiles). Reading the
    first k gives what filtering the whole list and slicing would."""

    def __init__(self, candidates: Iterator[Pair], ok: Callable[[Pair], bool]) -> None:
        self._candidates: Iterator[Pair] | None = candidates
        self._ok = ok
        self._seen: set[str] = set()
        self.checked: list[Pair] = []  # the pool so far

    def _extend(self) -> bool:
        """One more phrase of the pool; False when there is none."""
        while self._candidates is not None:
            pair = next(self._candidates, None)
            if pair is None:
                self._candidates = None
                break
            key = pair[0].lower()
            if key in self._seen:
                continue  # a later duplicate: the first one stands (or fell) for both
            self._seen.add(key)
            if self._ok(pair):
                self.checked.append(pair)
                return True
        return False

    def first(self, count: int | None, keep: Callable[[Pair], bool] | None = None) -> list[Pair]:
        out: list[Pair] = []
        index = 0
        while count is None or len(out) < count:
            if index == len(self.checked) and not self._extend():
                break
            pair = self.checked[index]
            index += 1
            if keep is None or keep(pair):
                out.append(pair)
        return out


# -- the API --------------------------------------------------------------------------------------


@dataclass
class Settings:
    latency: float = 0.0
    rates: list[tuple[str, float]] = field(default_factory=list)
    schedule: list[str] = field(default_factory=list)
    batch_schedule: list[str] = field(default_factory=list)  # the first batch requests' faults
    seed: int = 0
    retry_after: float = 1.0
    hang_seconds: float = 30.0
    min_cache_tokens: int = 1024
    batch_delay: float = 1.0
    refuse_forced_tool: bool = False  # answer 400 to tool_choice {"type": "tool"}, as thinking models do


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    hang: float = 0.0
    raw: bytes | None = None  # a body sent as it is (the JSON-lines results), not as JSON
    content_type: str = "application/json"


@dataclass
class FakeBatch:
    """One Message Batch: its requests, when it ends, and its results once it has ended."""

    id: str
    created: float
    ends: float
    requests: list[dict[str, Any]]
    cancel_initiated: float | None = None
    ended: float | None = None
    results: list[dict[str, Any]] | None = None

    def counts(self) -> dict[str, int]:
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if self.results is None:
            counts["processing"] = len(self.requests)
        else:
            for line in self.results:
                counts[line["result"]["type"]] += 1
        return counts

    def to_json(self, base: str) -> dict[str, Any]:
        status = "ended" if self.ended is not None else "canceling" if self.cancel_initiated else "in_progress"
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": self.counts(),
            "created_at": iso(self.created),
            "expires_at": iso(self.created + 86400),
            "ended_at": iso(self.ended),
            "cancel_initiated_at": iso(self.cancel_initiated),
            "archived_at": None,
            "results_url": f"{base}/v1/messages/batches/{self.id}/results" if self.ended is not None else None,
        }


def iso(t: float | None) -> str | None:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z") if t is not None else None


class FakeAPI:
    """The state behind the routes: the course, the fault plan, the prompt cache and the log."""

    def __init__(self, course: Course, settings: Settings, log_path: Path | None, stop: threading.Event) -> None:
        self.course = course
        self.book = Phrasebook(course, settings.seed)
        self.settings = settings
        self.stop = stop
        self.log_path = log_path
        self._lock = threading.Lock()
        self._count = 0
        self._attempts: dict[tuple[str, int], int] = {}
        self._cache: set[str] = set()
        self._parts = CanonicalParts()
        self._ids = itertools.count(1)  # next() on a count is atomic under the GIL
        self._batches: dict[str, FakeBatch] = {}
        self._batch_ids = itertools.count(1)
        self._batch_attempts: dict[tuple[str, int], int] = {}
        self._batch_count = 0

    # -- bookkeeping --

    def log(self, record: dict[str, Any]) -> None:
        if self.log_path is None:
            return
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock, self.log_path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()

    def pick_fault(self, lego_id: str, rounds: int) -> tuple[int, int, str | None]:
        """(request number, attempt, fault): the schedule first, then the rates."""
        with self._lock:
            number = self._count = self._count + 1
            key = (lego_id, rounds)
            attempt = self._attempts[key] = self._attempts.get(key, 0) + 1
        if number <= len(self.settings.schedule):
            return number, attempt, self.settings.schedule[number - 1]
        draw = random.Random(f"{self.settings.seed}|{lego_id}|{rounds}|{attempt}").random()
        total = 0.0
        for kind, rate in self.settings.rates:
            if kind in BATCH_FAULTS:
                continue  # drawn apart, per batch request (:meth:`pick_batch_fault`)
            total += rate
            if draw < total:
                return number, attempt, kind
        return number, attempt, None

    def pick_batch_fault(self, custom_id: str, rounds: int) -> str | None:
        """batch_errored, batch_expired or None for one request of a batch: deterministic per
        custom_id, round and attempt (a resubmitted request is a new attempt)."""
        with self._lock:
            key = (custom_id, rounds)
            attempt = self._batch_attempts[key] = self._batch_attempts.get(key, 0) + 1
            number = self._batch_count = self._batch_count + 1
        if number <= len(self.settings.batch_schedule):
            kind = self.settings.batch_schedule[number - 1]
            return None if kind == "batch_ok" else kind
        draw = random.Random(f"{self.settings.seed}|batch|{custom_id}|{rounds}|{attempt}").random()
        total = 0.0
        for kind, rate in self.settings.rates:
            if kind in BATCH_FAULTS:
                total += rate
                if draw < total:
                    return None if kind == "batch_ok" else kind
        return None

    def cache_usage(self, body: dict[str, Any]) -> tuple[int, int, int]:
        """(cache write, cache read, total prompt tokens): prefixes end at each ``cache_control``
        breakpoint (order: tools, system, messages); the longest one seen before is read."""
        parts: list[Any] = [{"tools": body.get("tools") or []}]
        breakpoints: list[int] = []
        system = body.get("system") or []
        for block in [{"type": "text", "text": system}] if isinstance(system, str) else system:
            parts.append(block)
            if isinstance(block, dict) and block.get("cache_control"):
                breakpoints.append(len(parts))
        for message in body.get("messages") or []:
            content = message.get("content")
            for block in [content] if isinstance(content, str) else content or []:
                parts.append(block)
                if isinstance(block, dict) and block.get("cache_control"):
                    breakpoints.append(len(parts))
        items = self._parts.items(parts)
        total = tokens(join_canonical(items))
        prefixes = [self._parts.digest_and_tokens(items[:end]) for end in breakpoints]
        prefixes = [(h, t) for h, t in prefixes if t >= self.settings.min_cache_tokens]
        with self._lock:
            read = max((t for h, t in prefixes if h in self._cache), default=0)
            write = max((t for _, t in prefixes), default=0) - read
            self._cache.update(h for h, _ in prefixes)
        return max(write, 0), read, total

    def prefix_hash(self, system: Any) -> str:
        """:func:`digest` of the system prompt, from the cached canonical texts of its blocks."""
        if isinstance(system, list):
            return self._parts.digest_and_tokens(self._parts.items(system))[0]
        return digest(system)

    # -- one Messages request --

    def answer(self, body: Any) -> tuple[Answer, dict[str, Any]]:
        """The answer to one ``POST /v1/messages`` body, and the log record describing it."""
        check_body(body)
        if self.settings.refuse_forced_tool and (body.get("tool_choice") or {}).get("type") == "tool":
            raise ApiError(
                400, "invalid_request_error", "tool_choice: forcing a tool use is not supported with thinking (fake)"
            )
        text = first_user_text(body["messages"])
        found = LEGO_ID_LINE.search(text)
        lego_id = found.group(1) if found else None
        rounds = sum(1 for m in body["messages"] if m.get("role") == "assistant")
        number, attempt, fault = self.pick_fault(lego_id or "-", rounds)
        record: dict[str, Any] = {
            "n": number,
            "lego_id": lego_id,
            "round": rounds,
            "repair": rounds > 0,
            "attempt": attempt,
            "fault": fault,
            "prefix_hash": self.prefix_hash(body.get("system") or ""),
        }
        if rounds:
            record["repair_text"] = last_user_text(body["messages"])[:4000]
        if fault == "429":
            return self.error(
                ApiError(
                    429, "rate_limit_error", "Rate limited (fake).", {"retry-after": f"{self.settings.retry_after:g}"}
                ),
                record,
            )
        if fault == "500":
            return self.error(ApiError(500, "api_error", "Internal server error (fake)."), record)
        if fault == "529":
            return self.error(ApiError(529, "overloaded_error", "Overloaded (fake)."), record)
        if fault == "hostile_error":
            return self.error(ApiError(500, "api_error", f"Internal server error (fake) {HOSTILE_TEXT}"), record)
        if lego_id is None or self.course.canonical_of.get(lego_id) is None:
            raise ApiError(400, "invalid_request_error", "no known LEGO_ID line in the first user message")
        lego = self.course.by_id[self.course.canonical_of[lego_id]]
        content, phrases = self.content(lego, body["messages"], rounds, fault)
        write, read, total = self.cache_usage(body)
        usage = {
            "input_tokens": max(1, total - write - read),
            "output_tokens": tokens(canonical(content)),
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read,
        }
        message = {
            "id": f"msg_fake_{number:06d}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": "end_turn" if fault == "prose" else "tool_use",
            "stop_sequence": None,
            "usage": usage,
        }
        record.update(status=200, usage=usage, phrases=phrases)
        # A hang is a correct answer sent too late: the client has given up by then.
        hang = self.settings.hang_seconds if fault == "hang" else 0.0
        return Answer(200, message, {"request-id": f"req_fake_{number:06d}"}, hang=hang), record

    def error(self, error: ApiError, record: dict[str, Any]) -> tuple[Answer, dict[str, Any]]:
        record["status"] = error.status
        return Answer(error.status, error.body(), error.headers), record

    def content(self, lego: CourseLego, messages: list[Any], rounds: int, fault: str | None) -> tuple[list[Any], int]:
        """The answer's content blocks and how many phrases they carry."""
        if rounds == 0:
            phrases = ([self.course.seed_phrase(lego.seed_id)] if lego.culminating else []) + self.book.phrases(
                lego, FIRST_ANSWER
            )
        else:  # phrases not said in the conversation yet
            said = canonical(messages).lower()
            phrases = self.book.phrases(lego, REPAIR_ANSWER, lambda pair: pair[0].lower() not in said)
        extra = {"future": self.book.future, "no_operative": self.book.no_operative}.get(fault or "")
        bad = extra(lego) if extra else None
        if bad is not None:
            phrases.insert(len(phrases) // 2, bad)
        if fault == "hostile":
            phrases = [(t, f"{k} {HOSTILE_TEXT}") for t, k in phrases]
        if fault == "prose":
            listing = "\n".join(f"- {t} ({k})" for t, k in phrases) or "- (none)"
            return [{"type": "text", "text": f"Here are some phrases for {lego.target}:\n{listing}"}], 0
        tool_input: Any = {"phrases": [{"target": t, "known": k} for t, k in phrases]}
        if fault == "malformed":
            variant = random.Random(f"{self.settings.seed}|malformed|{lego.id}|{rounds}").randrange(3)
            tool_input = [
                {"phrases": [{"target": t} for t, _ in phrases] or [{"target": lego.target}]},  # no known
                {"phrases": json.dumps(tool_input["phrases"], ensure_ascii=False)},  # JSON in a string
                {"phrases": [[t, k] for t, k in phrases] or [[lego.target, lego.known]]},  # arrays, not objects
            ][variant]
        block = {
            "type": "tool_use",
            "id": f"toolu_fake_{lego.id}_{rounds}_{next(self._ids):06d}",
            "name": TOOL_NAME,
            "input": tool_input,
        }
        return [block], len(phrases)

    # -- Message Batches --

    def create_batch(self, body: Any) -> FakeBatch:
        """Check a create body as the API does (a bad batch is refused whole) and queue it."""
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            raise ApiError(400, "invalid_request_error", "requests: a non-empty list is required")
        if len(requests) > MAX_BATCH_REQUESTS:
            raise ApiError(400, "invalid_request_error", f"requests: at most {MAX_BATCH_REQUESTS} per batch")
        seen: set[str] = set()
        for index, request in enumerate(requests):
            custom_id = request.get("custom_id") if isinstance(request, dict) else None
            if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
                raise ApiError(400, "invalid_request_error", f"requests.{index}.custom_id: 1-64 of [a-zA-Z0-9_-]")
            if custom_id in seen:
                raise ApiError(400, "invalid_request_error", f"requests.{index}.custom_id: {custom_id} is not unique")
            if not isinstance(request.get("params"), dict):
                raise ApiError(400, "invalid_request_error", f"requests.{index}.params: an object is required")
            seen.add(custom_id)
        now = time.time()
        batch = FakeBatch(
            id=f"msgbatch_fake_{next(self._batch_ids):06d}",
            created=now,
            ends=now + self.settings.batch_delay,
            requests=requests,
        )
        with self._lock:
            self._batches[batch.id] = batch
        return batch

    def batch(self, batch_id: str) -> FakeBatch:
        """The batch, ended (and its results made) once its time has come or it was canceled."""
        with self._lock:
            batch = self._batches.get(batch_id)
        if batch is None:
            raise ApiError(404, "not_found_error", f"no message batch {batch_id}")
        if batch.results is None and (batch.cancel_initiated or time.time() >= batch.ends):
            self.end_batch(batch)
        return batch

    def cancel_batch(self, batch_id: str) -> FakeBatch:
        batch = self.batch(batch_id)
        if batch.ended is None and batch.cancel_initiated is None:
            batch.cancel_initiated = time.time()
        return batch

    def end_batch(self, batch: FakeBatch) -> None:
        """Answer every request in the order sent (so the first of a cached prefix writes the
        cache), then shuffle the lines: the API does not keep the order either."""
        results = []
        for request in batch.requests:
            custom_id, params = request["custom_id"], request["params"]
            if batch.cancel_initiated:
                results.append({"custom_id": custom_id, "result": {"type": "canceled"}})
                self.log(
                    {
                        "op": "batch_request",
                        "t": round(time.time(), 4),
                        "batch_id": batch.id,
                        "custom_id": custom_id,
                        "result": "canceled",
                    }
                )
                continue
            result, record = self.batch_answer(custom_id, params)
            results.append({"custom_id": custom_id, "result": result})
            record.update(
                op="batch_request",
                t=round(time.time(), 4),
                batch_id=batch.id,
                custom_id=custom_id,
                result=result["type"],
            )
            self.log(record)
        random.Random(f"{self.settings.seed}|order|{batch.id}").shuffle(results)
        with self._lock:
            if batch.results is None:
                batch.results, batch.ended = results, time.time()

    def batch_answer(self, custom_id: str, params: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """One request of a batch: an expired or errored result drawn first (no usage, no
        cache), else :meth:`answer`, whose HTTP errors become errored results."""
        messages = params.get("messages") if isinstance(params, dict) else None
        rounds = (
            sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")
            if isinstance(messages, list)
            else 0
        )
        fault = self.pick_batch_fault(custom_id, rounds)
        record: dict[str, Any] = {"round": rounds, "repair": rounds > 0, "fault": fault}
        if fault == "batch_expired":
            return {"type": "expired"}, record
        if fault == "batch_errored":
            error = ApiError(500, "api_error", "Internal server error (fake batch request).")
            return {"type": "errored", "error": error.body()}, record
        try:
            answer, record = self.answer(params)
        except ApiError as exc:
            record.update(status=exc.status, error=exc.message)
            return {"type": "errored", "error": exc.body()}, record
        if answer.status != 200:
            return {"type": "errored", "error": answer.body}, record
        return {"type": "succeeded", "message": answer.body}, record


def check_body(body: Any) -> None:
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request_error", "body must be a JSON object")
    if not isinstance(body.get("model"), str) or not isinstance(body.get("max_tokens"), int):
        raise ApiError(400, "invalid_request_error", "model and max_tokens are required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise ApiError(400, "invalid_request_error", "messages: a non-empty list is required")
    roles = [m.get("role") for m in messages]
    if roles[0] != "user" or any(a == b for a, b in zip(roles, roles[1:], strict=False)):
        raise ApiError(400, "invalid_request_error", "messages: roles must alternate, starting with user")


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    for block in content or []:
        if isinstance(block, dict) and block.get("type") == "text":
            out.append(str(block.get("text", "")))
        elif isinstance(block, dict) and block.get("type") == "tool_result":
            out.extend(_texts(block.get("content")))
    return out


def first_user_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(_texts(messages[0].get("content")))


def last_user_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(_texts(messages[-1].get("content")))


# -- HTTP -------------------------------------------------------------------------------------------


def messages_route(api: FakeAPI, handler: Handler, body: Any) -> Answer:
    started = time.time()
    try:
        answer, record = api.answer(body)
    except ApiError as exc:
        answer, record = Answer(exc.status, exc.body(), exc.headers), {"status": exc.status, "error": exc.message}
    if answer.hang:
        record["status"] = "hang"
    record.update(
        op="message", t=round(started, 4), path=handler.path, retry_count=handler.headers.get("x-stainless-retry-count")
    )
    api.log(record)  # before any wait, so a reader sees a hanging request at once
    # Past the client's timeout for a hang; both waits are bounded and cut short by a stop.
    api.stop.wait(answer.hang or api.settings.latency)
    return answer


def _batch_call(op: str, api: FakeAPI, handler: Handler, call: Callable[[], FakeBatch]) -> Answer:
    """A Batches call as JSON, logged (op, batch id, status, counts) before the latency wait."""
    record: dict[str, Any] = {"op": op, "t": round(time.time(), 4), "path": handler.path}
    try:
        batch = call()
    except ApiError as exc:
        record.update(status=exc.status, error=exc.message)
        api.log(record)
        return Answer(exc.status, exc.body(), exc.headers)
    data = batch.to_json(f"http://{handler.headers.get('host') or handler.server.address}")
    record.update(
        status=200,
        batch_id=batch.id,
        processing_status=data["processing_status"],
        request_counts=data["request_counts"],
        requests=len(batch.requests),
    )
    if op == "batch_create":
        record["custom_ids"] = [r["custom_id"] for r in batch.requests]
    api.log(record)
    api.stop.wait(api.settings.latency)
    return Answer(200, data)


def batch_create_route(api: FakeAPI, handler: Handler, body: Any) -> Answer:
    return _batch_call("batch_create", api, handler, lambda: api.create_batch(body))


def batch_retrieve_route(api: FakeAPI, handler: Handler, body: Any) -> Answer:
    return _batch_call("batch_retrieve", api, handler, lambda: api.batch(_batch_id(handler)))


def batch_cancel_route(api: FakeAPI, handler: Handler, body: Any) -> Answer:
    return _batch_call("batch_cancel", api, handler, lambda: api.cancel_batch(_batch_id(handler)))


def batch_results_route(api: FakeAPI, handler: Handler, body: Any) -> Answer:
    """The results as JSON lines, once the batch has ended."""
    record: dict[str, Any] = {"op": "batch_results", "t": round(time.time(), 4), "path": handler.path}
    try:
        batch = api.batch(_batch_id(handler))
        if batch.results is None:
            raise ApiError(400, "invalid_request_error", f"message batch {batch.id} has not ended yet")
    except ApiError as exc:
        record.update(status=exc.status, error=exc.message)
        api.log(record)
        return Answer(exc.status, exc.body(), exc.headers)
    record.update(status=200, batch_id=batch.id, lines=len(batch.results))
    api.log(record)
    raw = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in batch.results).encode("utf-8")
    return Answer(200, {}, raw=raw, content_type="application/binary")


def _batch_id(handler: Handler) -> str:
    return handler.path.split("?", 1)[0].split("/")[4]


#: (method, path pattern) -> handler; the first match wins.
BATCH_ID = r"(msgbatch_[A-Za-z0-9_]+)"
ROUTES: list[tuple[str, re.Pattern[str], Callable[[FakeAPI, Handler, Any], Answer]]] = [
    ("POST", re.compile(r"^/v1/messages/?$"), messages_route),
    ("POST", re.compile(r"^/v1/messages/batches/?$"), batch_create_route),
    ("GET", re.compile(rf"^/v1/messages/batches/{BATCH_ID}/?$"), batch_retrieve_route),
    ("GET", re.compile(rf"^/v1/messages/batches/{BATCH_ID}/results/?$"), batch_results_route),
    ("POST", re.compile(rf"^/v1/messages/batches/{BATCH_ID}/cancel/?$"), batch_cancel_route),
]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    server: FakeServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # the JSON-lines log is the record; stderr stays quiet

    def do_GET(self) -> None:
        self.route("GET")

    def do_POST(self) -> None:
        self.route("POST")

    def do_DELETE(self) -> None:
        self.route("DELETE")

    def route(self, method: str) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        if not (self.headers.get("x-api-key") or self.headers.get("authorization")):
            return self.send(Answer(401, ApiError(401, "authentication_error", "no API key").body()))
        for verb, pattern, route in ROUTES:
            if verb == method and pattern.match(path):
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    return self.send(Answer(400, ApiError(400, "invalid_request_error", "body is not JSON").body()))
                return self.send(route(self.server.api, self, body))
        self.send(Answer(404, ApiError(404, "not_found_error", f"no route {method} {path}").body()))

    def send(self, answer: Answer) -> None:
        data = answer.raw if answer.raw is not None else json.dumps(answer.body, ensure_ascii=False).encode("utf-8")
        try:
            self.send_response(answer.status)
            self.send_header("content-type", answer.content_type)
            self.send_header("content-length", str(len(data)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client gave up (a hang past its timeout)


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True  # a hanging handler never keeps the process alive
    allow_reuse_address = True

    def __init__(self, port: int, api: FakeAPI) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.api = api


# -- command line -------------------------------------------------------------------------------------


def parse_fault(text: str, kind_of_number: type) -> tuple[str, Any]:
    kind, _, number = text.partition(":")
    if kind not in FAULTS:
        raise argparse.ArgumentTypeError(f"unknown fault {kind!r}; choose from {', '.join(FAULTS)}")
    try:
        value = kind_of_number(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected {kind}:{kind_of_number.__name__.upper()}") from None
    return kind, value


# -- starting it from tests and benchmarks ---------------------------------------------------------


class ServerProcess:
    """This server started as a real subprocess on a free port of 127.0.0.1, for tests and
    benchmarks: its ``base_url``, its request log and :meth:`stop`. ``popen`` goes to Popen.

    Raises :class:`RuntimeError` (with the server's last words) when it does not start in time.
    """

    def __init__(
        self,
        course: Path,
        log: Path,
        args: tuple[str, ...] | list[str] = (),
        *,
        max_seconds: float = 900,
        timeout: float = 30.0,
        **popen: Any,
    ) -> None:
        self.log = log
        self.stderr = log.with_suffix(".stderr")
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--course",
            str(course),
            "--log",
            str(log),
            "--max-seconds",
            str(int(max_seconds)),
            *args,
        ]
        with self.stderr.open("w") as err:  # a file, not a pipe: a full pipe would block the server
            self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, **popen)
        line = self._first_line(time.monotonic() + timeout)
        if not line.startswith("listening on http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"fake API did not start: {line!r} {self.stderr.read_text()[-2000:]}")
        self.base_url = line.strip().rpartition(" ")[2]

    def _first_line(self, deadline: float) -> str:
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if selector.select(timeout=0.1):
                    return self.process.stdout.readline()
                if self.process.poll() is not None:
                    return ""
        return ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def requests(self) -> list[dict[str, Any]]:
        """Every request logged so far, in arrival order (a line still being written is skipped)."""
        if not self.log.exists():
            return []
        lines = self.log.read_text(encoding="utf-8").splitlines(keepends=True)
        return [json.loads(line) for line in lines if line.endswith("\n")]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--course", type=Path, required=True, help="course folder (with lego_pairs.json)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1; 0 picks a free one")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        type=lambda s: parse_fault(s, float),
        metavar="KIND:RATE",
        help="inject a fault at this rate (0-1); repeatable",
    )
    parser.add_argument(
        "--fault-first",
        action="append",
        default=[],
        type=lambda s: parse_fault(s, int),
        metavar="KIND:COUNT",
        help="the next COUNT requests get this fault; repeatable, in order",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draws and phrase choice")
    parser.add_argument("--retry-after", type=float, default=1.0, help="retry-after of a 429, seconds")
    parser.add_argument("--hang-seconds", type=float, default=30.0, help="how long a hang lasts")
    parser.add_argument("--min-cache-tokens", type=int, default=1024, help="shortest cacheable prefix")
    parser.add_argument(
        "--batch-delay",
        type=float,
        default=1.0,
        help="seconds from a batch's creation until it has ended (Batches API)",
    )
    parser.add_argument(
        "--refuse-forced-tool",
        action="store_true",
        help="answer 400 to a forced tool_choice, as models that think by default do",
    )
    parser.add_argument("--log", type=Path, help="append one JSON line per request to this file")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="stop by itself after this long")
    args = parser.parse_args(argv)
    for group in (BATCH_FAULTS, TRANSPORT_FAULTS + CONTENT_FAULTS):  # two draws, one per group
        rates = [rate for kind, rate in args.fault if kind in group]
        if sum(rates) > 1 or any(not 0 <= rate <= 1 for rate in rates):
            parser.error("fault rates must be within 0-1 and sum to at most 1 (batch faults apart)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        course = Course.load(args.course)
    except Exception as exc:  # one line, as every phase5 tool
        print(f"fake_anthropic: {exc}", file=sys.stderr)
        return 2
    settings = Settings(
        latency=args.latency,
        rates=args.fault,
        seed=args.seed,
        retry_after=args.retry_after,
        hang_seconds=args.hang_seconds,
        min_cache_tokens=args.min_cache_tokens,
        batch_delay=args.batch_delay,
        refuse_forced_tool=args.refuse_forced_tool,
        schedule=[kind for kind, count in args.fault_first for _ in range(count) if kind not in BATCH_FAULTS],
        batch_schedule=[kind for kind, count in args.fault_first for _ in range(count) if kind in BATCH_FAULTS],
    )
    stop = threading.Event()
    server = FakeServer(args.port, FakeAPI(course, settings, args.log, stop))
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        stop.wait(args.max_seconds)
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
