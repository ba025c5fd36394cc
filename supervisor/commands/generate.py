"""``phase5 generate``: every canonical LEGO's basket in one process, without tmux.

For people trying a backend and for tests: the same generators and the same basket format as
``run``, but no plan, no segments and no resume; the result is one ``{lego_id: basket}`` file.
With ``anthropic-batch``, all baskets go as one Message Batch per round (its state file beside
the output, removed at the end); ``--max-cost`` stops starting requests at a spend (exit 4).
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import click

from supervisor.commands.common import (
    api_options,
    budget_options,
    course_argument,
    echo_json,
    generator_options,
    json_option,
    load_course,
)
from worker.budget import Budget, check_priced, make_pricer
from worker.checksum import write_basket_file
from worker.cost import PriceTable
from worker.course import Course
from worker.exitcodes import ExitCode
from worker.generators import (
    API_BACKENDS,
    BACKENDS,
    GeneratedBasket,
    GenerationError,
    Generator,
    SpendLimitReached,
    Usage,
    check_backend,
    default_backend,
    make_generator,
)
from worker.paths import course_arg
from worker.rules import phrase_words

DEFAULT_OUT_NAME = "generated_baskets.json"
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


class Progress:
    """A progress bar on a terminal; on anything else, a plain line every tenth of the way."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total, self.label, self.done = total, label, 0
        self.stream = stream or sys.stderr
        self._bar: Any = None
        if _isatty(self.stream):
            # Redraw at most ~200 times: a fast backend would spend its time drawing otherwise.
            self._bar = click.progressbar(
                length=total,
                label=label,
                file=self.stream,
                show_pos=True,
                show_eta=True,
                update_min_steps=max(1, total // 200),
            )
            self._bar.__enter__()
        else:
            self._step = max(1, total // 10)
            click.echo(f"{label}: 0/{total}", file=self.stream)

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
        elif self.done == self.total or self.done % self._step == 0:
            click.echo(f"{self.label}: {self.done}/{self.total}", file=self.stream)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


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


@click.command("generate")
@course_argument
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default=None,
    help="Generator backend [default: $PHASE5_BACKEND, else corpus (offline)].",
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Basket file to write [default: COURSE/{DEFAULT_OUT_NAME}].",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Threads for API backends (the offline corpus backend runs in one).",
)
@api_options
@budget_options
@json_option
def generate_command(
    course: str,
    courses_dir: str | None,
    backend: str | None,
    out: Path | None,
    concurrency: int,
    as_json: bool,
    max_cost: float | None,
    prices: str | None,
    **api: Any,
) -> None:
    """Generate a basket for every canonical LEGO of COURSE in this process (no tmux, no plan),
    write them as one {lego_id: basket} file and print a summary.

    Exit status 0 when every basket was made, 1 when some failed (the others are written),
    2 for bad input or a missing API key, 4 when --max-cost was reached (what was made is
    written)."""
    backend = backend or default_backend()
    options = generator_options(api)
    check_backend(backend, options)  # before anything starts
    loaded = load_course(course, courses_dir)
    path = out or loaded.root / DEFAULT_OUT_NAME
    table = PriceTable.load(prices)
    check_priced(table, options.model, max_cost, backend)
    price = make_pricer(table)
    generator = make_generator(backend, loaded, options)
    threads = concurrency if backend in API_BACKENDS else 1
    started = time.perf_counter()
    progress = Progress(len(loaded.legos), f"generate {loaded.code} ({backend})")
    result = GenerateResult()
    budget = Budget(max_cost, own=lambda: result.cost_usd)  # this process's spend: no other worker
    try:
        generate_course(
            loaded,
            generator,
            threads,
            on_basket=lambda _id: progress.advance(),
            price=price,
            may_start=budget.allows if max_cost is not None else None,
            batch_state=path.with_name(f".{path.name}.batch.json"),
            result=result,
        )
    finally:
        progress.close()
        generator.close()
    ordered = {lego_id: result.baskets[lego_id].basket.to_json() for lego_id in loaded.ids if lego_id in result.baskets}
    write_basket_file(path, ordered)
    seconds = time.perf_counter() - started
    summary = {
        "course": str(loaded.root),
        "backend": backend,
        "out": str(path),
        "threads": threads,
        "seconds": round(seconds, 3),
        **result.summary(loaded),
    }
    if as_json:
        echo_json(summary)
    else:
        _print_summary(summary)
    if result.budget_reached:
        click.echo(result.halted or budget.message(), err=True)
        sys.exit(ExitCode.BUDGET)
    sys.exit(ExitCode.FAILED if result.failed else ExitCode.OK)


def _print_summary(s: dict[str, Any]) -> None:
    share = f"{100 * s['band_share']:.1f}%" if s["band_share"] is not None else "-"
    click.echo(
        f"{s['out']}: {s['baskets']}/{s['expected']} baskets, {s['e_phrases']} e-phrases,"
        f" {s['empty_baskets']} empty baskets, in {s['seconds']:.2f} s ({s['backend']})"
    )
    click.echo(
        f"length band: {s['band_phrases_in_band']}/{s['band_phrases']} phrases in band ({share};"
        " culminating seed sentences not counted)"
    )
    if s["requests"]:
        u = s["usage"]
        click.echo(
            f"requests {s['requests']}, repair rounds {s['repair_rounds']}, dropped phrases"
            f" {s['dropped_phrases']}; tokens in {u['input_tokens']} out {u['output_tokens']}"
            f" cache write {u['cache_creation_input_tokens']} cache read {u['cache_read_input_tokens']};"
            f" cost ${s['cost_usd']:.4f}"
        )
    if s["failed"]:
        ids = list(s["failed"])
        click.echo(
            f"FAILED {len(ids)} baskets (not in the file): {', '.join(ids[:20])}"
            f"{' ...' if len(ids) > 20 else ''}; first reason: {s['failed'][ids[0]]}"
        )
    click.echo(f"check it with: phase5 validate {course_arg(Path(s['course']))} {s['out']}")


COMMANDS = [generate_command]
