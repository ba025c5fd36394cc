"""The ``anthropic-batch`` backend: the ``anthropic`` backend's requests sent as Message Batches.

Each basket is the same :class:`~worker.generators.anthropic_backend.Conversation` (same prompts,
cached prefix, tool schema, checks and repair path); only the transport differs. A
:class:`BatchSession` drives many conversations at once, in rounds: every conversation that
needs a request goes into ONE batch per round (``custom_id`` = the LEGO id); when the batch has
ended, each result is taken into its conversation; finished baskets go to the sink, the others
(a repair round, or an errored/expired request sent again) into the next round's batch.

Crash safety: the session's state file holds the round, the batch id and every conversation
between two requests. It is written (atomically) after each round's results are taken and again
as soon as a batch is created, before any polling; a restarted worker re-attaches to the
recorded batch instead of submitting it again. Taking the same results twice gives the same
outcome (the conversations are restored from before the batch), and the sink ignores baskets
already saved, so a crash at any point loses nothing and pays for nothing twice, except in the
moment between a batch's creation and the state write that records it.

Caching: in a batch it is best effort, so the backend helps it. Prefixes are written with the
1-hour TTL (a batch can take up to an hour), and before a round's batch is created, the first
fresh basket of every prefix not written yet (or written too long ago) goes alone through the
Messages API as a *warm-up* request, when others would read it (the prefix gate sends the skill's
writer first): its answer
is taken into its conversation like any other (priced at the Messages price, recorded apart as
``interactive_usage``), and the batch's requests then read the prefixes it wrote.

Bounds: GATE failures get ``repair_rounds`` rounds, as in the ``anthropic`` backend; an errored
or expired request is sent again up to ``max_retries`` times (the bound the SDK applies to a 5xx
or a timeout of the ``anthropic`` backend). Past that, a basket with accepted phrases is kept
with what it has (the rest dropped); a basket without an answer at all is a generation error.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anthropic

from worker.atomic import read_json, write_json
from worker.course import Course
from worker.generators import GeneratorOptions
from worker.generators.anthropic_backend import (
    CACHE_TTL_SECONDS,
    AnthropicGenerator,
    Conversation,
    _one_line,
    usage_of,
)
from worker.generators.base import GeneratedBasket, GenerationError, Usage

STATE_VERSION = 1
#: The API's limits on one batch.
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
#: How often the waiting loop hands control back (heartbeat, pane, signals) between polls.
TICK = 0.2
HISTORY = 50  # rounds kept in the state file's history
#: Seconds at least for creating a batch and reading its results: tens of MB go up or down.
BULK_TIMEOUT = 600.0
COUNT_KEYS = ("processing", "succeeded", "errored", "expired", "canceled")
#: A prefix is written again by a warm-up once this share of its TTL has passed.
REWARM_AFTER = 0.75
WARM_UP_THREADS = 16
#: A prefix is warmed up only when at least this many fresh requests would read it.
WARM_UP_MIN_READERS = 2


class BatchSink(Protocol):
    """Where a session's baskets go: the orchestrator's agents, or ``phase5 generate``."""

    def wanted(self) -> list[tuple[str, int]]:
        """(LEGO id, prefix_upto) of every basket still to make now, in order."""
        ...

    def saved(self, result: GeneratedBasket) -> None:
        """A validated basket; a basket already saved is ignored."""
        ...

    def failed(self, lego_id: str, reason: str) -> None:
        """A basket that could not be made; it is started afresh if still :meth:`wanted`."""
        ...


@dataclass
class BatchStatus:
    """What the pane and the progress file show of the session."""

    round: int = 0
    batch_id: str | None = None
    status: str = "idle"  # idle, in_progress, canceling, ended, done (nothing left to send)
    requests: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_KEYS, 0))
    submitted_at: float | None = None
    created: int = 0  # batches this process created (a re-attached one is not counted)
    reattached: str | None = None  # the batch id this process re-attached to
    last_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "id": self.batch_id,
            "status": self.status,
            "requests": self.requests,
            **self.counts,
            "submitted_at": self.submitted_at,
            "created": self.created,
            "reattached": self.reattached,
            "last_error": self.last_error,
        }

    def line(self) -> str:
        """One line for a pane."""
        if self.batch_id is None:
            return f"batch round {self.round}: {self.status}"
        c = self.counts
        return (
            f"batch r{self.round} {self.batch_id} {self.status}: processing {c['processing']} succeeded"
            f" {c['succeeded']} errored {c['errored']} expired {c['expired']}"
            + (f" canceled {c['canceled']}" if c["canceled"] else "")
        )


@dataclass
class Job:
    """One basket in the session: its conversation and how often its request failed."""

    conversation: Conversation
    failures: int = 0

    @property
    def lego_id(self) -> str:
        return self.conversation.ctx.lego.id

    def to_json(self) -> dict[str, Any]:
        return {"failures": self.failures, **self.conversation.snapshot()}


class BatchGenerator(AnthropicGenerator):
    """:class:`~worker.generators.base.Generator` on the Message Batches API. Orchestrators and
    ``generate`` drive it through :class:`BatchSession`; :meth:`generate` (one basket, one
    batch per round) is there for the interface."""

    name = "anthropic-batch"
    batched = True
    cache_ttl = "1h"  # a batch may take an hour: the 5-minute entries would be gone by then

    def __init__(self, course: Course, options: GeneratorOptions) -> None:
        super().__init__(course, options)

    def generate(self, ctx: Any, prefix_upto: int | None = None) -> GeneratedBasket:
        sink = _OneBasket(ctx.lego.id, ctx.position if prefix_upto is None else prefix_upto)
        BatchSession(self, None, sink, threading.Event()).run()
        if sink.result is None:
            raise GenerationError(sink.error or f"{ctx.lego.id}: no basket")
        return sink.result

    @property
    def client(self) -> anthropic.Anthropic:
        return self._client


class _OneBasket:
    def __init__(self, lego_id: str, prefix_upto: int) -> None:
        self.lego_id, self.prefix_upto = lego_id, prefix_upto
        self.result: GeneratedBasket | None = None
        self.error: str | None = None

    def wanted(self) -> list[tuple[str, int]]:
        return [] if self.result or self.error else [(self.lego_id, self.prefix_upto)]

    def saved(self, result: GeneratedBasket) -> None:
        self.result = result

    def failed(self, lego_id: str, reason: str) -> None:
        self.error = reason


class BatchSession:
    """Rounds of Message Batches until the sink wants nothing more.

    :meth:`run` returns ``"done"``, ``"stopped"`` (``stop`` was set; the state file keeps the
    batch to re-attach to) or ``"budget"`` (``may_submit`` said no before a new batch). API
    failures past the SDK's retries raise :class:`GenerationError`."""

    def __init__(
        self,
        generator: BatchGenerator,
        state_path: Path | None,
        sink: BatchSink,
        stop: threading.Event,
        may_submit: Callable[[], bool] | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> None:
        self.generator = generator
        self.course = generator.course
        self.options = generator.options
        self.state_path = state_path
        self.sink = sink
        self.stop = stop
        self.may_submit = may_submit
        self.on_wait = on_wait or (lambda: None)
        self.status = BatchStatus()
        self.history: list[dict[str, Any]] = []
        self.jobs: dict[str, Job] = {}
        self._warmed: dict[tuple[Hashable, ...], float] = {}  # prefix keys -> when a warm-up wrote them
        self.warm_ups = 0  # warm-up requests this process sent

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> str:
        batch_id = self._resume()
        while True:
            if batch_id is not None:
                outcome = self._wait(batch_id)
                if outcome == "stopped":
                    return "stopped"
                if outcome == "ended":
                    self._take(batch_id)
                batch_id = None
            self._refresh()
            self._save(None)  # between rounds: what the next batch holds, or nothing left
            if not self.jobs:
                self.status.status = "done"
                return "done"
            if self.stop.is_set():
                return "stopped"
            if self.may_submit is not None and not self.may_submit():
                return "budget"
            if self._warm_up():
                continue  # warm-up answers taken: what the batch holds changed
            batch_id = self._create()
            self._save(batch_id)  # before any polling: a restart re-attaches to it

    def _resume(self) -> str | None:
        """Jobs and the batch to re-attach to, from the state file of an earlier process."""
        state = self._load()
        if not state:
            return None
        wanted = dict(self.sink.wanted())
        self.status.round = int(state.get("round") or 0)
        self.history = list(state.get("history") or [])
        for snap in state.get("jobs") or []:
            lego_id = snap.get("lego_id")
            if lego_id not in wanted or lego_id in self.jobs:
                continue  # saved since, or no longer this worker's
            conversation = self.generator.conversation(self.course.context(lego_id), int(snap["prefix_upto"]))
            conversation.restore(snap)
            self.jobs[lego_id] = Job(conversation, failures=int(snap.get("failures") or 0))
        batch_id = state.get("batch_id")
        if batch_id and self.jobs:
            self.status.batch_id, self.status.reattached = batch_id, batch_id
            self.status.requests = len(state.get("custom_ids") or self.jobs)
            self.status.submitted_at = state.get("submitted_at")
            self.status.status = "in_progress"
            return str(batch_id)
        return None

    def _refresh(self) -> None:
        """Match the jobs to what the sink wants: start the new ones, forget the others. LEGO #1
        has no vocabulary to combine with: its basket is made without a request."""
        while True:
            wanted = self.sink.wanted()
            ids = {lego_id for lego_id, _ in wanted}
            for lego_id in [i for i in self.jobs if i not in ids]:
                del self.jobs[lego_id]
            first_legos = []
            for lego_id, prefix_upto in wanted:
                if lego_id in self.jobs:
                    continue
                ctx = self.course.context(lego_id)
                conversation = self.generator.conversation(ctx, prefix_upto)
                if ctx.position == 1:
                    conversation.notes.append("no available vocabulary: no request")
                    first_legos.append(conversation)
                else:
                    self.jobs[lego_id] = Job(conversation)
            if not first_legos:
                return
            for conversation in first_legos:
                self.sink.saved(conversation.result())

    # -- the API ------------------------------------------------------------------------------------

    def _warm_up(self) -> bool:
        """Send the first fresh basket of each prefix not warm through the Messages API, so that
        the batch reads the prefixes instead of writing each many times. True when any was sent."""
        now = time.monotonic()
        ttl = CACHE_TTL_SECONDS[self.generator.cache_ttl] * REWARM_AFTER
        fresh: dict[tuple[Hashable, ...], list[Job]] = {}
        for job in self.jobs.values():
            keys = tuple(job.conversation.cache_keys)
            if keys and job.conversation.requests == 0 and now - self._warmed.get(keys, float("-inf")) >= ttl:
                fresh.setdefault(keys, []).append(job)
        chosen = {keys: jobs[0] for keys, jobs in fresh.items() if len(jobs) >= WARM_UP_MIN_READERS}
        if not chosen:
            return False
        self.status.status = "warming"
        with ThreadPoolExecutor(min(WARM_UP_THREADS, len(chosen)), thread_name_prefix="warm-up") as pool:
            answers = list(pool.map(self._warm_up_one, chosen.values()))
        for (keys, job), answer in zip(chosen.items(), answers, strict=True):
            self._warmed[keys] = now
            conversation = job.conversation
            if isinstance(answer, Exception):
                conversation.notes.append(f"warm-up request failed ({_one_line(answer, 120)}): sent in the batch")
                continue
            self.warm_ups += 1
            conversation.interactive_usage = (conversation.interactive_usage or Usage()) + usage_of(answer)
            if not conversation.take(answer):
                del self.jobs[job.lego_id]
                self.sink.saved(conversation.result())
        self._save(None)
        return True

    def _warm_up_one(self, job: Job) -> Any:
        """One warm-up request; a generation error is returned (its basket goes in the batch), a
        spend limit raised."""
        try:
            return self.generator.send(job.conversation)
        except GenerationError as exc:
            if type(exc) is not GenerationError:
                raise
            return exc

    def _create(self) -> str:
        requests = [{"custom_id": lego_id, "params": job.conversation.params()} for lego_id, job in self.jobs.items()]
        size = len(json.dumps(requests, ensure_ascii=False).encode("utf-8"))
        if len(requests) > MAX_REQUESTS or size > MAX_BYTES:
            raise GenerationError(
                f"a batch of {len(requests)} requests ({size / 2**20:.0f} MB) is over the API's"
                f" limits ({MAX_REQUESTS} requests, {MAX_BYTES // 2**20} MB): plan more orchestrators"
            )
        try:
            batch = self.generator.client.messages.batches.create(
                requests=requests,  # type: ignore[arg-type]  # the SDK's TypedDicts; the params are built as dicts
                timeout=max(self.options.timeout, BULK_TIMEOUT),
            )
        except anthropic.APIError as exc:
            raise GenerationError(self._reason("creating a message batch", exc)) from None
        self.status.round += 1
        self.status.created += 1
        self.status.batch_id, self.status.requests = batch.id, len(requests)
        self.status.submitted_at = time.time()
        self._counts(batch)
        return batch.id

    def _wait(self, batch_id: str) -> str:
        """Poll until the batch has ended: ``"ended"``, ``"stopped"``, or ``"lost"`` (the API no
        longer knows it, e.g. its results were archived: its requests are sent again)."""
        next_poll = 0.0
        errors = 0
        while True:
            if time.monotonic() >= next_poll:
                try:
                    batch = self.generator.client.messages.batches.retrieve(batch_id)
                except anthropic.NotFoundError:
                    self.status.last_error = f"batch {batch_id} not found: its requests are sent again"
                    return "lost"
                except anthropic.APIError as exc:
                    errors += 1
                    self.status.last_error = self._reason(f"polling batch {batch_id}", exc)
                    if errors > self.options.max_retries:
                        raise GenerationError(self.status.last_error) from None
                else:
                    errors = 0
                    self._counts(batch)
                    if batch.processing_status == "ended":
                        return "ended"
                next_poll = time.monotonic() + self.options.poll_interval
            self.on_wait()
            if self.stop.wait(min(TICK, max(0.0, next_poll - time.monotonic()))):
                return "stopped"

    def _results(self, batch_id: str) -> dict[str, Any]:
        errors = 0
        while True:
            try:
                lines = self.generator.client.messages.batches.results(
                    batch_id, timeout=max(self.options.timeout, BULK_TIMEOUT)
                )
                return {line.custom_id: line.result for line in lines}
            except anthropic.APIError as exc:
                errors += 1
                if errors > self.options.max_retries:
                    raise GenerationError(self._reason(f"reading the results of batch {batch_id}", exc)) from None
                if self.stop.wait(min(2.0**errors, 30.0)):
                    raise GenerationError("stopped while reading batch results") from None

    def _take(self, batch_id: str) -> None:
        """Each result into its conversation; finished baskets to the sink."""
        results = self._results(batch_id)
        self.history = (
            self.history
            + [{"round": self.status.round, "batch_id": batch_id, "requests": len(self.jobs), **self.status.counts}]
        )[-HISTORY:]
        tag = f"batch round {self.status.round}"
        for lego_id, job in list(self.jobs.items()):
            result = results.get(lego_id)
            kind = getattr(result, "type", "missing")
            conversation = job.conversation
            if kind == "succeeded":
                if not conversation.take(result.message):  # type: ignore[union-attr]
                    del self.jobs[lego_id]
                    self.sink.saved(conversation.result())
                continue
            job.failures += 1
            detail = _error_text(result) if kind == "errored" else ""
            conversation.notes.append(f"{tag}: {kind}{f' ({detail})' if detail else ''}")
            if job.failures <= self.options.max_retries:
                continue  # sent again, unchanged, in the next round
            del self.jobs[lego_id]
            reason = f"{lego_id}: batch request {kind} {job.failures} times{f' (last: {detail})' if detail else ''}"
            if conversation.requests == 0:
                self.sink.failed(lego_id, reason)
            else:
                conversation.notes.append(f"dropped the repair: {reason}")
                self.sink.saved(conversation.result())

    def _counts(self, batch: Any) -> None:
        self.status.status = batch.processing_status
        counts = batch.request_counts
        self.status.counts = {key: int(getattr(counts, key, 0) or 0) for key in COUNT_KEYS}

    def _reason(self, what: str, exc: Exception) -> str:
        status = getattr(exc, "status_code", None)
        return f"API error{f' {status}' if status else ''} {what}: {_one_line(getattr(exc, 'message', exc), 160)}"

    # -- the state file ---------------------------------------------------------------------------------

    def _load(self) -> dict[str, Any] | None:
        if self.state_path is None or not self.state_path.exists():
            return None
        try:
            state = read_json(self.state_path)
        except (OSError, ValueError):
            return None  # written atomically, so only a hand-edited file gets here: start afresh
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            return None
        return state

    def _save(self, batch_id: str | None) -> None:
        if self.state_path is None:
            return
        write_json(
            self.state_path,
            {
                "version": STATE_VERSION,
                "backend": self.generator.name,
                "model": self.options.model,
                "round": self.status.round,
                "batch_id": batch_id,
                "submitted_at": self.status.submitted_at if batch_id else None,
                "custom_ids": list(self.jobs) if batch_id else [],
                "updated_at": time.time(),
                "history": self.history,
                "jobs": [job.to_json() for job in self.jobs.values()],
            },
            indent=None,
        )


def _error_text(result: Any) -> str:
    """``type: message`` of an errored result's error."""
    error = getattr(result, "error", None)
    inner = getattr(error, "error", None)
    kind = getattr(inner, "type", None) or "error"
    message = getattr(inner, "message", None) or ""
    return _one_line(f"{kind}: {message}" if message else kind, 160)
