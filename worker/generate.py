"""Every canonical LEGO's basket in one process, without plan, segments or tmux: the engine of
``phase5 generate`` (for people trying a backend, and for tests).

The same generators and the same basket format as a run. With ``concurrency`` > 1, threads take
batches of consecutive LEGOs as agents do, so that an API backend's cached prefix stays the
same for a batch; a batched generator (``anthropic-batch``) gets all baskets in one Message Batch
per round, its state in ``batch_state``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.course import Course
from worker.generators import GeneratedBasket, GenerationError, Generator, SpendLimitReached, Usage
from worker.rules import phrase_words

DEFAULT_CONCURRENCY = 10
#: LEGOs a thread generates in a row with one cached prompt prefix (about an agent's batch).
BATCH_SIZE = 20


@dataclass
class GenerateResult:
    """What ``generate`` made, for the summary."""

    baskets: dict[str, GeneratedBasket] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # lego id -> reason
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # threads add to both maps
    cost_usd: float = 0.0  # of the baskets made, when a price function was given
    budget_reached: bool = False
    halted: str | None = None  # the API's spend limit answered (why no more is spent)

    def summary(self, course: Course) -> dict[str, Any]:
        """Counts as ``validate`` counts them: the seed sentence of a culminating basket is
        mandated, not chosen, so the length band leaves it out."""
        counted = in_band = 0
        usage = Usage()
        for lego_id, generated in self.baskets.items():
            ctx = course.context(lego_id)
            skip = 1 if ctx.seed_pair is not None and generated.basket.e else 0
            for pair in generated.basket.e[skip:]:
                counted += 1
                in_band += ctx.band.contains(phrase_words(course, pair))
            usage = usage + generated.usage
        values = self.baskets.values()
        return {
            "baskets": len(self.baskets),
            "expected": len(course.legos),
            "e_phrases": sum(len(g.basket.e) for g in values),
            "empty_baskets": sum(not g.basket.e for g in values),
            "band_phrases": counted,
            "band_phrases_in_band": in_band,
            "band_share": round(in_band / counted, 4) if counted else None,
            "dropped_phrases": sum(len(g.rejected) for g in values),
            "requests": sum(g.requests for g in values),
            "repair_rounds": sum(g.repair_rounds for g in values),
            "usage": usage.to_json(),
            "cost_usd": round(self.cost_usd, 6),
            "budget_reached": self.budget_reached,
            "failed": dict(sorted(self.failed.items())),
        }


def generate_course(
    course: Course,
    generator: Generator,
    concurrency: int = 1,
    on_basket: Callable[[str], None] = lambda lego_id: None,
    price: Callable[[dict[str, Any]], float] | None = None,
    may_start: Callable[[], bool] | None = None,
    batch_state: Path | None = None,
    result: GenerateResult | None = None,
) -> GenerateResult:
    """Generate every canonical LEGO's basket with ``generator``.

    With ``concurrency`` > 1, threads take batches of :data:`BATCH_SIZE` consecutive LEGOs and
    pass the batch's first position as ``prefix_upto``, as an agent does, so that an API
    backend's cached prompt prefix stays the same for a whole batch. ``on_basket`` is called
    in the calling thread after each basket (done or failed). ``price`` prices a basket's journal
    record (into ``cost_usd``); ``may_start`` is asked before each request (False: stop, the
    budget is reached; a budget reads ``result.cost_usd`` of the ``result`` it is given). A batched
    generator gets all baskets in one Message Batch per round."""
    ids = course.ids
    result = result if result is not None else GenerateResult()
    if getattr(generator, "batched", False):
        return _generate_batched(course, generator, result, on_basket, price, may_start, batch_state)
    if concurrency <= 1:
        for lego_id in ids:
            if may_start is not None and not may_start():
                result.budget_reached = True
                break
            _one(course, generator, lego_id, None, result, price)
            on_basket(lego_id)
        return result
    batches = [ids[i : i + BATCH_SIZE] for i in range(0, len(ids), BATCH_SIZE)]
    finished: queue.Queue[str] = queue.Queue()
    stop = threading.Event()

    def run_batch(batch: Sequence[str]) -> None:
        first = course.by_id[batch[0]].position
        for lego_id in batch:
            if stop.is_set():
                return
            if may_start is not None and not may_start():
                result.budget_reached = True
                finished.put("")  # wakes the caller, which then stops the others
                return
            _one(course, generator, lego_id, first, result, price)
            finished.put(lego_id)

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="generate") as pool:
        futures: list[Future[None]] = [pool.submit(run_batch, batch) for batch in batches]
        try:
            for _ in ids:
                if result.budget_reached:
                    stop.set()
                    break
                while True:
                    try:
                        lego_id = finished.get(timeout=0.2)
                        if lego_id:
                            on_basket(lego_id)
                        break
                    except queue.Empty:
                        # A thread that died of a bug would leave us waiting forever: surface it.
                        for future in futures:
                            error = future.exception() if future.done() else None
                            if error is not None:
                                raise error from None
        except BaseException:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return result


def _one(
    course: Course,
    generator: Generator,
    lego_id: str,
    prefix_upto: int | None,
    result: GenerateResult,
    price: Callable[[dict[str, Any]], float] | None = None,
) -> None:
    """One basket; a :class:`GenerationError` is recorded as a failure, anything else is a bug."""
    try:
        generated = generator.generate(course.context(lego_id), prefix_upto=prefix_upto)
    except SpendLimitReached as exc:  # nothing more can be spent: stop as at the budget
        with result.lock:
            result.budget_reached, result.halted = True, f"budget reached: {exc}"
        return
    except GenerationError as exc:
        with result.lock:
            result.failed[lego_id] = str(exc) or type(exc).__name__
        return
    cost = price(generated.journal_record()) if price is not None else 0.0
    with result.lock:
        result.baskets[lego_id] = generated
        result.cost_usd += cost


class _ResultSink:
    """The :class:`~worker.generators.batch_backend.BatchSink` of ``generate``: every LEGO, in
    batches of :data:`BATCH_SIZE` for the cached prefix, as the thread path does."""

    def __init__(
        self,
        course: Course,
        result: GenerateResult,
        on_basket: Callable[[str], None],
        price: Callable[[dict[str, Any]], float] | None,
    ) -> None:
        self.result, self.on_basket, self.price = result, on_basket, price
        ids = course.ids
        self.order = [
            (lego_id, course.by_id[ids[start]].position)
            for start in range(0, len(ids), BATCH_SIZE)
            for lego_id in ids[start : start + BATCH_SIZE]
        ]

    def wanted(self) -> list[tuple[str, int]]:
        done = self.result.baskets.keys() | self.result.failed.keys()
        return [(lego_id, upto) for lego_id, upto in self.order if lego_id not in done]

    def saved(self, generated: GeneratedBasket) -> None:
        if generated.lego_id not in self.result.baskets:
            self.result.baskets[generated.lego_id] = generated
            self.result.cost_usd += self.price(generated.journal_record()) if self.price is not None else 0.0
            self.on_basket(generated.lego_id)

    def failed(self, lego_id: str, reason: str) -> None:
        self.result.failed[lego_id] = reason
        self.on_basket(lego_id)


def _generate_batched(
    course: Course,
    generator: Any,
    result: GenerateResult,
    on_basket: Callable[[str], None],
    price: Callable[[dict[str, Any]], float] | None,
    may_start: Callable[[], bool] | None,
    state: Path | None,
) -> GenerateResult:
    from worker.generators.batch_backend import BatchSession

    sink = _ResultSink(course, result, on_basket, price)
    try:
        outcome = BatchSession(generator, state, sink, threading.Event(), may_submit=may_start).run()
    except SpendLimitReached as exc:
        result.budget_reached, result.halted = True, f"budget reached: {exc}"
        return result
    except GenerationError as exc:
        for lego_id, _ in sink.wanted():
            result.failed[lego_id] = str(exc)
        return result
    result.budget_reached = outcome == "budget"
    if outcome == "done" and state is not None:
        state.unlink(missing_ok=True)
    return result
