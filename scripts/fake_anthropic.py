#!/usr/bin/env python3
"""A local stand-in for the Anthropic Messages API, for tests and benchmarks (docs/DESIGN.md §5).

It speaks ``POST /v1/messages`` (plain or streamed as server-sent events) and
``/v1/messages/count_tokens`` well enough for the real SDK pointed at it with
``ANTHROPIC_BASE_URL``: it answers with plausible e-phrases for the LEGO named in the request's
``LEGO_ID:`` line (the given course's own seed sentences and runs of them available at that
position, cut as written, never LEGO texts joined), in the shape the request asks for
(structured output: a JSON text; else a ``submit_e_phrases`` tool call), and reports token
usage (about 4 characters a token, times the model's tokenizer factor) with prompt caching.

Per model id it behaves as the real API does (:mod:`scripts.fake_models`): 400 for a forced
``tool_choice`` or non-default sampling parameters where the model refuses them, for a schema
structured output refuses, for more than 4 breakpoints; on models that think by default, answers
start with a ``thinking`` block with a signature (bound to model and text), thinking counts
toward ``max_tokens`` (an answer that does not fit is cut: ``stop_reason`` max_tokens), and a
turn answering a tool call must send those blocks back unchanged (else 400). Prompt caching: a
prefix up to a breakpoint is cached only from the model's minimum length on; an entry is
readable only once the answer of the request that wrote it has begun (``--first-token`` of the
latency in), lives 5 minutes or 1 hour from its last use (divided by ``--time-scale``).

Faults, by rate (deterministic for a ``--seed``: drawn per LEGO, round and attempt, whatever the
order requests arrive in) and by schedule (``--fault-first 429:2``: the first two requests;
``--fault-first batch_expired:2``: the first two requests of batches):

    429           rate limited, with a ``retry-after`` header (``--retry-after`` seconds)
    500, 529      server error, overloaded
    hang          no answer for ``--hang-seconds`` (past the client timeout)
    spend_limit   429 ``enforced_spend_limit_reached`` without ``retry-after``, and so is every
                  request after it (the tier's monthly cap)
    prose         text instead of the tool call (only where the request allows it: tool_choice auto)
    malformed     tool input that does not fit the schema (only with a tool neither strict nor
                  structured output)
    refusal       no phrases, ``stop_reason`` refusal
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
    python scripts/fake_anthropic.py --course ... --replay earlier_baskets.json   # a model's answers again

``--replay BASKETS_FILE``: the first answer for each LEGO in the file is that file's e-phrases
for it, as written (a real model's earlier output, errors included); repair rounds are answered
as usual.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import itertools
import json
import math
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

from scripts.fake_limits import TIERS, Latency, RateLimits
from scripts.fake_models import (
    RequestRefused,
    behaviour,
    check_request,
    signature,
    thinking_text,
)
from worker.course import Course, CourseLego
from worker.generators.corpus import corpus_index
from worker.models import Pair

TOOL_NAME = "submit_e_phrases"
TRANSPORT_FAULTS = ("429", "500", "529", "hang", "hostile_error", "spend_limit")
CONTENT_FAULTS = ("prose", "malformed", "future", "no_operative", "hostile", "refusal")
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


def scaled(count: int, factor: float) -> int:
    """A token count in a model's tokenizer (``factor`` tokens per four characters)."""
    return int(count * factor) if count else 0


#: Seconds an error answer takes at most (a refused request does not wait for a model).
ERROR_DELAY = 0.02
#: Cache lifetimes of the two TTLs, in seconds (divided by --time-scale).
CACHE_TTL = {"5m": 300.0, "1h": 3600.0}
#: Where a content fault can happen at all, by the request's shape (fake_models.check_request):
#: structured output always answers the schema; a strict tool's input always fits it; a forced
#: tool is always called.
CONTENT_SHAPES = {"prose": ("auto_tool", "text"), "malformed": ("auto_tool", "forced_tool")}


def strict_shape(shape: str) -> bool:
    return shape.endswith("+strict")


def rate_limited(which: str, wait: float) -> ApiError:
    """429 for a rate limit (``retry-after``: whole seconds, as the API sends, and the exact wait
    as ``retry-after-ms``); the acceleration limit says so in ``error.details``."""
    headers = {"retry-after": str(max(1, math.ceil(wait))), "retry-after-ms": str(max(1, round(wait * 1000)))}
    if which == "ramp":
        error = ApiError(429, "rate_limit_error", "Usage increased too quickly; ramp up gradually (fake).", headers)
        error.details = {"error_code": "ramp_limit_exceeded"}
        return error
    return ApiError(429, "rate_limit_error", f"Rate limited: {which} per minute (fake).", headers)


def spend_limit_error() -> ApiError:
    """The tier's monthly spend cap: a 429 without ``retry-after`` that keeps failing."""
    error = ApiError(
        429,
        "rate_limit_error",
        "Your organization has reached its monthly usage limit for its API tier; access resumes on the first of"
        " next month (fake).",
    )
    error.details = {"error_code": "enforced_spend_limit_reached"}
    return error


def cut(content: list[Any], max_tokens: int, thinking: int, factor: float, model: str) -> list[Any]:
    """An answer cut at ``max_tokens``: the thinking first, then as much of the answer as fits."""
    out: list[Any] = []
    room = max_tokens
    if thinking:
        block = content[0]
        if thinking > room:
            text = block["thinking"][: int(room * 4 / factor)]
            return [{"type": "thinking", "thinking": text, "signature": signature(model, text)}]
        out.append(block)
        room -= thinking
        content = content[1:]
    for block in content:
        if block["type"] == "text":
            out.append({"type": "text", "text": block["text"][: int(room * 4 / factor)]})
        elif block["type"] == "tool_use":
            out.append({**block, "input": {}})  # a tool call cut before its input was complete
        break
    return out


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

    details: dict[str, Any] | None = None

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.kind, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"type": "error", "error": error}


# -- plausible phrases from the course ------------------------------------------------------------


class Phrasebook:
    """E-phrases the fake "model" writes for a LEGO: sentences people wrote, never LEGO texts
    joined. They are the course's own seed sentences and runs of them cut as written, each with
    the block of its translation aligned to it (the candidates of :mod:`worker.generators.corpus`),
    taken in the index's order; a "future" phrase is such a sentence holding a later LEGO, a
    "no operative" phrase one without the LEGO. Deterministic."""

    def __init__(self, course: Course, seed: int) -> None:
        self.course = course
        self.seed = seed
        self.index = corpus_index(course)
        # Pools, future and non-operative phrases depend on the LEGO alone: made once per LEGO,
        # and a pool only as far as answers read it.
        self._pools: dict[str, LazyPool] = {}
        self._futures: dict[str, Pair | None] = {}
        self._no_operatives: dict[str, Pair | None] = {}
        self._lock = threading.Lock()  # a pool's generator must not run in two threads at once

    def position_of(self, lego_id: str) -> int:
        return self.course.by_id[self.course.canonical_of[lego_id]].position

    def pool(self, lego: CourseLego) -> list[Pair]:
        """Candidate phrases for ``lego``, all tiling with LEGOs available at its position."""
        return self.phrases(lego, None)

    def phrases(self, lego: CourseLego, count: int | None, keep: Callable[[Pair], bool] | None = None) -> list[Pair]:
        """The first ``count`` (None: all) phrases of :meth:`pool` that ``keep`` accepts."""
        with self._lock:
            pool = self._pools.get(lego.id)
            if pool is None:
                candidates = (c.pair for c in self.index.candidates(lego.position))
                pool = self._pools[lego.id] = LazyPool(
                    candidates, lambda pair: self.course.tiler.tile(pair[0], lego.position).ok
                )
            return pool.first(count, keep)

    def future(self, lego: CourseLego) -> Pair | None:
        """A sentence with this LEGO and one introduced later: fails GATE."""
        if lego.id not in self._futures:
            self._futures[lego.id] = self._find(
                lego, range(lego.position + 1, lego.position + 1 + SEARCH_LIMIT), holding=True
            )
        return self._futures[lego.id]

    def no_operative(self, lego: CourseLego) -> Pair | None:
        """An earlier LEGO's sentence without this one: fails GATE (the operative LEGO is missing)."""
        if lego.id not in self._no_operatives:
            self._no_operatives[lego.id] = self._find(
                lego, range(lego.position - 1, max(0, lego.position - 1 - SEARCH_LIMIT), -1), holding=False
            )
        return self._no_operatives[lego.id]

    @staticmethod
    def window_sides(asked: list[Pair]) -> list[Pair]:
        """Answers to the question about d windows' known sides: for two pieces in three, the
        first half of the translation it names (an unbroken piece of it, so it is taken), for the
        third a text that is no piece of it (so it is refused)."""
        answers = []
        for index, (piece, translation) in enumerate(asked):
            words = translation.split()
            half = " ".join(words[: max(1, len(words) // 2)]).strip(" .,;:?!¿¡")
            answers.append((piece, half if index % 3 != 2 else f"{half} (not in the translation)"))
        return answers

    def _find(self, lego: CourseLego, positions: range, holding: bool) -> Pair | None:
        """A sentence of the LEGOs at ``positions`` that fails GATE at this LEGO's position,
        holding this LEGO (or not) when one does, else any."""
        failing = [
            candidate
            for position in positions
            for candidate in self.index.candidates(position)
            if not self.course.tiler.tile(candidate.pair[0], lego.position).ok
        ]
        chosen = [c for c in failing if (lego.position in c.positions) == holding] or failing
        return chosen[0].pair if chosen else None


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
    min_cache_tokens: int = 1024  # for model ids the fake does not know (fake_models.BEHAVIOURS)
    batch_delay: float = 1.0
    refuse_forced_tool: bool = False  # answer 400 to a forced tool_choice whatever the model
    thinking_tokens: int = 800  # the fake model's thinking on models that think by default
    first_token: float = 0.1  # share of an answer's latency before it begins (a stream's message_start)
    time_scale: float = 1.0  # real seconds per fake second: cache lifetimes are scaled by it
    replay: dict[str, list[Pair]] = field(default_factory=dict)  # --replay: first answers per LEGO
    latency_p99: float = 1.0  # the 99th percentile over the median (1: every answer takes --latency)
    limits: RateLimits | None = None  # the account's rate limits (None: unlimited)

    @property
    def latency_model(self) -> Latency:
        return Latency(self.latency, self.latency_p99, self.seed)


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    hang: float = 0.0
    raw: bytes | None = None  # a body sent as it is (the JSON-lines results), not as JSON
    content_type: str = "application/json"
    events: list[tuple[str, dict[str, Any]]] | None = None  # a streamed answer's server-sent events
    first_wait: float = 0.0  # a stream: seconds before its headers and message_start
    rest_wait: float = 0.0  # a stream: seconds from message_start to the rest
    latency: float = 0.0  # this answer's latency, drawn per request
    on_end: Callable[[], None] | None = None  # called once the answer is sent (or given up)


@dataclass
class CachePlan:
    """What one request reads from and writes to the prompt cache (:meth:`FakeAPI.cache_plan`)."""

    write: int
    write_1h: int
    read: int
    total: int
    prefixes: list[tuple[str, int, float]]  # (key, tokens, lifetime in seconds) of each cached prefix


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
        # prefix digest (model included) -> (readable from, expires at), on time.monotonic()
        self._cache: dict[str, tuple[float, float]] = {}
        self._parts = CanonicalParts()
        self.spend_limited = False  # once the spend limit answered, every request gets it
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

    def cache_plan(self, body: dict[str, Any]) -> CachePlan:
        """What the request reads from and writes to the prompt cache, in the model's tokens:
        prefixes end at each ``cache_control`` breakpoint (order: tools, system, messages); the
        longest one written before, whose writer's answer has begun and that has not expired, is
        read; the prefixes at least the model's minimum long are written. Nothing is changed
        until :meth:`cache_commit` (a request refused by the rate limits changes nothing)."""
        model = str(body.get("model"))
        how = behaviour(model)
        minimum = how.min_cache_tokens if how.min_cache_tokens is not None else self.settings.min_cache_tokens
        parts: list[Any] = [{"tools": body.get("tools") or []}]
        breakpoints: list[tuple[int, str]] = []
        system = body.get("system") or []
        system_blocks: list[Any] = [{"type": "text", "text": system}] if isinstance(system, str) else system
        for block in system_blocks:
            parts.append(block)
            if isinstance(block, dict) and isinstance(block.get("cache_control"), dict):
                breakpoints.append((len(parts), block["cache_control"].get("ttl", "5m")))
        for message in body.get("messages") or []:
            content = message.get("content")
            content_blocks: list[Any] = [content] if isinstance(content, str) else content or []
            for block in content_blocks:
                if isinstance(block, dict) and block.get("type") in ("thinking", "redacted_thinking"):
                    continue  # earlier turns' thinking is dropped from the context, not billed as input
                parts.append(block)
                if isinstance(block, dict) and isinstance(block.get("cache_control"), dict):
                    breakpoints.append((len(parts), block["cache_control"].get("ttl", "5m")))
        items = self._parts.items(parts)
        total = scaled(tokens(join_canonical(items)), how.tokenizer)
        prefixes = []
        for end, ttl_name in breakpoints:
            key, count = self._parts.digest_and_tokens(items[:end])
            count = scaled(count, how.tokenizer)
            if count >= minimum:
                prefixes.append((f"{model}|{key}", count, CACHE_TTL.get(ttl_name, 300.0) / self.settings.time_scale))
        now = time.monotonic()
        with self._lock:
            live = [p for p in prefixes if self._readable(p[0], now)]
        read = max((n for _, n, _ in live), default=0)
        longest = max(prefixes, key=lambda p: p[1], default=None)
        write = max(max((n for _, n, _ in prefixes), default=0) - read, 0)
        write_1h = write if longest is not None and longest[2] * self.settings.time_scale >= 3600 else 0
        return CachePlan(write, write_1h, read, total, prefixes)

    def cache_commit(self, plan: CachePlan, begins: float) -> None:
        """Read hits refresh their lifetime; the prefixes written are readable once this answer
        begins (``begins``, monotonic)."""
        now = time.monotonic()
        with self._lock:
            for key, _, ttl in plan.prefixes:
                if self._readable(key, now):
                    readable, _ = self._cache[key]
                    self._cache[key] = (readable, now + ttl)  # a hit refreshes the lifetime
                elif key not in self._cache or self._cache[key][1] <= now:
                    self._cache[key] = (begins, begins + ttl)
            if len(self._cache) > MAX_PREFIXES:
                self._cache = {k: v for k, v in self._cache.items() if v[1] > now}

    def _readable(self, key: str, now: float) -> bool:
        entry = self._cache.get(key)
        return entry is not None and entry[0] <= now < entry[1]

    def prefix_hash(self, system: Any) -> str:
        """:func:`digest` of the system prompt, from the cached canonical texts of its blocks."""
        if isinstance(system, list):
            return self._parts.digest_and_tokens(self._parts.items(system))[0]
        return digest(system)

    # -- one Messages request --

    def answer(self, body: Any, streamed: bool = False, limited: bool = True) -> tuple[Answer, dict[str, Any]]:
        """The answer to one ``POST /v1/messages`` body, and the log record describing it. Its
        latency is drawn per request (:class:`~scripts.fake_limits.Latency`); it begins (and its
        cache writes become readable) after the first-token share of it when ``streamed``, at its
        end otherwise. The rate limits, when set, admit it or answer 429."""
        check_body(body)
        model = body["model"]
        try:
            shape = check_request(body, model, self.settings.refuse_forced_tool)
        except RequestRefused as exc:
            raise ApiError(400, "invalid_request_error", f"{exc}") from None
        text = first_user_text(body["messages"])
        found = LEGO_ID_LINE.search(text)
        lego_id = found.group(1) if found else None
        rounds = sum(1 for m in body["messages"] if m.get("role") == "assistant")
        number, attempt, fault = self.pick_fault(lego_id or "-", rounds)
        record: dict[str, Any] = {
            "n": number,
            "model": model,
            "lego_id": lego_id,
            "round": rounds,
            "repair": rounds > 0,
            "attempt": attempt,
            "fault": fault,
            "shape": shape,
            "prefix_hash": self.prefix_hash(body.get("system") or ""),
        }
        if rounds:
            record["repair_text"] = last_user_text(body["messages"])[:4000]
        latency = self.settings.latency_model.draw(f"{lego_id}|{rounds}|{attempt}")
        begins_in = latency * self.settings.first_token if streamed else latency
        record["latency"] = round(latency, 4)
        plan = self.cache_plan(body)
        record["prefixes"] = [[key[-12:], count] for key, count, _ in plan.prefixes]
        limits = self.settings.limits if limited else None  # a batch's requests have their own limits
        if limits is not None:
            refused, wait = limits.admit(plan.total - plan.read, body["max_tokens"])
            if refused is not None:
                record["limited"] = refused
                return self.error(rate_limited(refused, wait), record)
            record["reserved"] = body["max_tokens"]
        if fault == "spend_limit" or self.spend_limited:
            self.spend_limited = True
            return self.error(spend_limit_error(), record)
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
        if fault in CONTENT_SHAPES and (
            not shape.startswith(CONTENT_SHAPES[fault]) or (fault == "malformed" and strict_shape(shape))
        ):
            record["fault_suppressed"] = True  # structured output or a strict/forced tool rules it out
            fault = None
        lego = self.course.by_id[self.course.canonical_of[lego_id]]
        content, phrases = self.content(lego, body["messages"], rounds, fault, shape)
        if rounds and windows_asked(last_user_text(body["messages"])):
            record["windows"] = phrases  # a question about d windows' known sides, answered
        how = behaviour(model)
        thinking = 0
        if how.thinks:
            thought = thinking_text(lego.target, self.settings.thinking_tokens, how.tokenizer)
            content.insert(0, {"type": "thinking", "thinking": thought, "signature": signature(model, thought)})
            thinking = scaled(tokens(thought), how.tokenizer)
        answer_tokens = scaled(tokens(canonical(content[1:] if thinking else content)), how.tokenizer)
        stop_reason = "end_turn" if shape == "json" or fault == "prose" else "tool_use"
        if fault == "refusal":  # the classifiers stopped the answer: no JSON, whatever the shape
            content, phrases, stop_reason = [{"type": "text", "text": "I can't help with that (fake)."}], 0, "refusal"
        if thinking + answer_tokens > body["max_tokens"]:
            content = cut(content, body["max_tokens"], thinking, how.tokenizer, model)
            stop_reason = "max_tokens"
            record["cut"] = True
        begins = time.monotonic() + (self.settings.hang_seconds if fault == "hang" else begins_in)
        self.cache_commit(plan, begins)
        write, write_1h, read, total = plan.write, plan.write_1h, plan.read, plan.total
        usage = {
            "input_tokens": max(1, total - write - read),
            "output_tokens": min(thinking + answer_tokens, body["max_tokens"]),
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read,
            "cache_creation": {"ephemeral_5m_input_tokens": write - write_1h, "ephemeral_1h_input_tokens": write_1h},
        }
        message = {
            "id": f"msg_fake_{number:06d}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        record.update(status=200, usage=usage, phrases=phrases, stop_reason=stop_reason)
        record["request_id"] = f"req_fake_{number:06d}"
        if record["lego_id"] in self.settings.replay and rounds == 0:
            record["replayed"] = True
        # A hang is a correct answer sent too late: the client has given up by then.
        hang = self.settings.hang_seconds if fault == "hang" else 0.0
        answer = Answer(200, message, {"request-id": f"req_fake_{number:06d}"}, hang=hang, latency=latency)
        if limits is not None:
            reserved, used = body["max_tokens"], usage["output_tokens"]
            answer.on_end = lambda: limits.settle(reserved, used)
        return answer, record

    def count_tokens(self, body: Any) -> dict[str, int]:
        """``POST /v1/messages/count_tokens``: the prompt's tokens, as a request would count them
        (no caching)."""
        if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body.get("messages"):
            raise ApiError(400, "invalid_request_error", "model and messages are required")
        how = behaviour(body["model"])
        parts: list[Any] = [{"tools": body.get("tools") or []}]
        system = body.get("system") or []
        parts.extend([{"type": "text", "text": system}] if isinstance(system, str) else system)
        for message in body["messages"]:
            content = message.get("content") if isinstance(message, dict) else None
            parts.extend([content] if isinstance(content, str) else content or [])
        return {"input_tokens": scaled(tokens(join_canonical(self._parts.items(parts))), how.tokenizer)}

    def error(self, error: ApiError, record: dict[str, Any]) -> tuple[Answer, dict[str, Any]]:
        """An error answer; an admitted request's reserved output tokens go back at once."""
        record["status"] = error.status
        if record.get("reserved") and self.settings.limits is not None:  # only admitted requests reserve
            self.settings.limits.settle(record["reserved"], 0)
        return Answer(error.status, error.body(), error.headers, latency=record.get("latency", 0.0)), record

    def content(
        self, lego: CourseLego, messages: list[Any], rounds: int, fault: str | None, shape: str
    ) -> tuple[list[Any], int]:
        """The answer's content blocks (as the request's shape asks: a JSON text for structured
        output, else a tool call) and how many phrases they carry."""
        asked = windows_asked(last_user_text(messages)) if rounds else []
        if asked:  # the question about d windows' known sides, not a repair
            phrases = self.book.window_sides(asked)
        elif rounds == 0 and lego.id in self.settings.replay:
            phrases = list(self.settings.replay[lego.id])
        elif rounds == 0:
            seed = self.course.seed_phrase(lego.seed_id) if lego.culminating else None
            phrases = ([seed] if seed else []) + self.book.phrases(lego, FIRST_ANSWER)
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
        if shape == "json":
            return [{"type": "text", "text": json.dumps(tool_input, ensure_ascii=False)}], len(phrases)
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
        if self.spend_limited:
            raise spend_limit_error()
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
            answer, record = self.answer(params, limited=False)
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


#: How the anthropic backend lists the d windows whose known side it asks for
#: (worker.generators.anthropic_backend.Conversation._ask_windows): a piece and its translation.
_QUOTED = r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
WINDOW_LINE = re.compile(rf"^\d+\. {_QUOTED}, from the phrase you translated {_QUOTED}$", re.M)


def windows_asked(text: str) -> list[Pair]:
    """The (piece, translation) pairs a question about d windows' known sides lists, else []."""
    return [(ast.literal_eval(piece), ast.literal_eval(known)) for piece, known in WINDOW_LINE.findall(text)]


# -- HTTP -------------------------------------------------------------------------------------------


def messages_route(api: FakeAPI, handler: Handler, body: Any) -> Answer:
    """One Messages request: answered after its latency, or streamed (``"stream": true``, as the
    SDK's ``messages.stream`` sends): ``message_start`` after the first-token share of the
    latency (when the answer begins and its cache writes become readable), the rest at its end.
    Every answer carries the rate-limit headers when limits are set."""
    started = time.time()
    streamed = isinstance(body, dict) and body.get("stream") is True
    try:
        answer, record = api.answer(body, streamed=streamed)
    except ApiError as exc:
        answer, record = Answer(exc.status, exc.body(), exc.headers), {"status": exc.status, "error": exc.message}
    if answer.hang:
        record["status"] = "hang"
    record.update(
        op="message",
        t=round(started, 4),
        path=handler.path,
        stream=streamed,
        retry_count=handler.headers.get("x-stainless-retry-count"),
    )
    if api.settings.limits is not None:
        answer.headers.update(api.settings.limits.headers())
    api.log(record)  # before any wait, so a reader sees a hanging request at once
    if streamed and answer.status == 200 and not answer.hang:
        answer.events = stream_events(answer.body)
        answer.first_wait = answer.latency * api.settings.first_token
        answer.rest_wait = answer.latency - answer.first_wait
        return answer
    # Past the client's timeout for a hang; both waits are bounded and cut short by a stop. An
    # error answer is quick (what a refused request costs is the round trip, not the latency).
    api.stop.wait(answer.hang or (answer.latency if answer.status == 200 else min(answer.latency, ERROR_DELAY)))
    return answer


def count_tokens_route(api: FakeAPI, handler: Handler, body: Any) -> Answer:
    record: dict[str, Any] = {"op": "count_tokens", "t": round(time.time(), 4), "path": handler.path}
    try:
        counted = api.count_tokens(body)
    except ApiError as exc:
        record.update(status=exc.status, error=exc.message)
        api.log(record)
        return Answer(exc.status, exc.body(), exc.headers)
    record.update(status=200, **counted)
    api.log(record)
    return Answer(200, counted)


def stream_events(message: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A message as the server-sent events of a streamed answer."""
    usage = message["usage"]
    first_usage = {
        "input_tokens": usage["input_tokens"],
        "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
        "cache_read_input_tokens": usage["cache_read_input_tokens"],
        "cache_creation": usage["cache_creation"],
        "output_tokens": 1,
    }
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {**message, "content": [], "stop_reason": None, "usage": first_usage},
            },
        )
    ]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "thinking":
            start: dict[str, Any] = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": block["thinking"]},
                {"type": "signature_delta", "signature": block["signature"]},
            ]
        elif kind == "text":
            start, deltas = {"type": "text", "text": ""}, [{"type": "text_delta", "text": block["text"]}]
        else:
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": json.dumps(block["input"], ensure_ascii=False)}]
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}))
        events.extend(
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas
        )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _batch_call(op: str, api: FakeAPI, handler: Handler, call: Callable[[], FakeBatch]) -> Answer:
    """A Batches call as JSON, logged (op, batch id, status, counts) before the latency wait."""
    record: dict[str, Any] = {"op": op, "t": round(time.time(), 4), "path": handler.path}
    try:
        batch = call()
    except ApiError as exc:
        record.update(status=exc.status, error=exc.message)
        api.log(record)
        return Answer(exc.status, exc.body(), exc.headers)
    host = handler.headers.get("host") or f"127.0.0.1:{handler.server.server_address[1]}"
    data = batch.to_json(f"http://{host}")
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
    ("POST", re.compile(r"^/v1/messages/count_tokens/?$"), count_tokens_route),
    ("POST", re.compile(r"^/v1/messages/batches/?$"), batch_create_route),
    ("GET", re.compile(rf"^/v1/messages/batches/{BATCH_ID}/?$"), batch_retrieve_route),
    ("GET", re.compile(rf"^/v1/messages/batches/{BATCH_ID}/results/?$"), batch_results_route),
    ("POST", re.compile(rf"^/v1/messages/batches/{BATCH_ID}/cancel/?$"), batch_cancel_route),
]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    server: FakeHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
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
        try:
            self._send(answer)
        finally:
            if answer.on_end is not None:
                answer.on_end()

    def _send(self, answer: Answer) -> None:
        if answer.events is not None:
            return self.send_stream(answer)
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

    def send_stream(self, answer: Answer) -> None:
        """Server-sent events in chunks: ``message_start`` after ``first_wait``, the rest after
        ``rest_wait`` more."""
        assert answer.events is not None
        stop = self.server.api.stop

        def chunk(events: list[tuple[str, dict[str, Any]]]) -> bytes:
            data = "".join(f"event: {name}\ndata: {json.dumps(body, ensure_ascii=False)}\n\n" for name, body in events)
            raw = data.encode("utf-8")
            return f"{len(raw):x}\r\n".encode() + raw + b"\r\n"

        try:
            stop.wait(answer.first_wait)
            self.send_response(answer.status)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("transfer-encoding", "chunked")
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(chunk(answer.events[:1]))
            self.wfile.flush()
            stop.wait(answer.rest_wait)
            self.wfile.write(chunk(answer.events[1:]) + b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client gave up (closed the stream)
            request_id = answer.headers.get("request-id")
            self.server.api.log({"op": "stream_closed", "t": round(time.time(), 4), "request_id": request_id})


class FakeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a hanging handler never keeps the process alive
    allow_reuse_address = True
    request_queue_size = 1024  # hundreds of clients connect at once (the default backlog is 5)

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
        help="answer 400 to a forced tool_choice whatever the model (per model id it is refused anyway"
        " where the real API refuses it)",
    )
    parser.add_argument(
        "--thinking-tokens",
        type=int,
        default=800,
        help="tokens of thinking in each answer of a model that thinks by default (counts toward max_tokens)",
    )
    parser.add_argument(
        "--first-token",
        type=float,
        default=0.1,
        help="share of the latency before an answer begins (a stream's message_start; cache writes readable)",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="real seconds per fake second (e.g. 60 when L = 0.5 s stands for 30 s): cache lifetimes shrink by it",
    )
    parser.add_argument(
        "--latency-p99",
        type=float,
        default=1.0,
        metavar="RATIO",
        help="latency log-normal with median --latency and this 99th percentile over the median (4: a heavy"
        " tail); 1 (default): every answer takes --latency",
    )
    parser.add_argument(
        "--tier",
        choices=sorted(TIERS),
        help="rate limits of this tier (Sonnet: requests, input and output tokens a minute), scaled by --time-scale",
    )
    parser.add_argument("--rpm", type=float, help="requests a minute (overrides the tier's)")
    parser.add_argument("--itpm", type=float, help="input tokens a minute, cache reads excluded (overrides the tier's)")
    parser.add_argument("--otpm", type=float, help="output tokens a minute (overrides the tier's)")
    parser.add_argument(
        "--ramp-floor",
        type=float,
        default=0.5,
        help="acceleration limit: share of a minute's request quota a minute may use whatever came before;"
        " negative: no acceleration limit",
    )
    parser.add_argument(
        "--ramp-factor", type=float, default=2.0, help="acceleration limit: growth allowed over the previous minute"
    )
    parser.add_argument(
        "--replay",
        type=Path,
        metavar="BASKETS_FILE",
        help="first answer for each LEGO in this basket file: its e-phrases as written (errors included)",
    )
    parser.add_argument("--log", type=Path, help="append one JSON line per request to this file")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="stop by itself after this long")
    args = parser.parse_args(argv)
    for group in (BATCH_FAULTS, TRANSPORT_FAULTS + CONTENT_FAULTS):  # two draws, one per group
        rates = [rate for kind, rate in args.fault if kind in group]
        if sum(rates) > 1 or any(not 0 <= rate <= 1 for rate in rates):
            parser.error("fault rates must be within 0-1 and sum to at most 1 (batch faults apart)")
    return args


def load_replay(path: Path) -> dict[str, list[Pair]]:
    """The e-phrases of each LEGO in a basket file (a bare map or ``{"baskets": {...}}``)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict) and isinstance(data.get("baskets"), dict):
        data = data["baskets"]
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a {{lego_id: basket}} map")
    out: dict[str, list[Pair]] = {}
    for lego_id, basket in data.items():
        phrases = basket.get("e") if isinstance(basket, dict) else None
        if isinstance(phrases, list):
            out[lego_id] = [(str(p[0]), str(p[1])) for p in phrases if isinstance(p, list) and len(p) == 2]
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limits = None
    if args.tier or args.rpm or args.itpm or args.otpm:
        rpm, itpm, otpm = TIERS[args.tier or "start"]
        limits = RateLimits(
            args.rpm or rpm,
            args.itpm or itpm,
            args.otpm or otpm,
            time_scale=args.time_scale,
            ramp_floor=args.ramp_floor if args.ramp_floor >= 0 else None,
            ramp_factor=args.ramp_factor,
        )
    try:
        course = Course.load(args.course)
        replay = load_replay(args.replay) if args.replay else {}
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
        thinking_tokens=args.thinking_tokens,
        first_token=args.first_token,
        time_scale=args.time_scale,
        replay=replay,
        latency_p99=args.latency_p99,
        limits=limits,
        schedule=[kind for kind, count in args.fault_first for _ in range(count) if kind not in BATCH_FAULTS],
        batch_schedule=[kind for kind, count in args.fault_first for _ in range(count) if kind in BATCH_FAULTS],
    )
    stop = threading.Event()
    server = FakeHTTPServer(args.port, FakeAPI(course, settings, args.log, stop))
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
