"""``phase5 generate``: every canonical LEGO's basket in one process, without tmux.

For people trying a backend and for tests: the same generators and the same basket format as
``run``, but no plan, no segments and no resume; the result is one ``{lego_id: basket}`` file.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

import click

from supervisor.commands.common import api_options, course_argument, echo_json, generator_options, json_option, load_course
from worker.atomic import write_json
from worker.course import Course
from worker.generators import (
    API_BACKENDS,
    BACKENDS,
    GeneratedBasket,
    GenerationError,
    Generator,
    Usage,
    default_backend,
    make_generator,
    require_api_key,
)
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
            self._bar = click.progressbar(length=total, label=label, file=self.stream, show_pos=True,
                                          show_eta=True, update_min_steps=max(1, total // 200))
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
) -> GenerateResult:
    """Generate every canonical LEGO's basket with ``generator``.

    With ``concurrency`` > 1, threads take batches of :data:`BATCH_SIZE` consecutive LEGOs and
    pass the batch's first position as ``prefix_upto``, as an agent does, so that an API
    backend's cached prompt prefix stays the same for a whole batch. ``on_basket`` is called
    in the calling thread after each basket (done or failed)."""
    ids = course.ids
    result = GenerateResult()
    if concurrency <= 1:
        for lego_id in ids:
            _one(course, generator, lego_id, None, result)
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
            _one(course, generator, lego_id, first, result)
            finished.put(lego_id)

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="generate") as pool:
        futures: list[Future[None]] = [pool.submit(run_batch, batch) for batch in batches]
        try:
            for _ in ids:
                while True:
                    try:
                        on_basket(finished.get(timeout=0.2))
                        break
                    except queue.Empty:
                        # A thread that died of a bug would leave us waiting forever: surface it.
                        for future in futures:
                            if future.done() and future.exception() is not None:
                                raise future.exception()  # type: ignore[misc]
        except BaseException:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return result


def _one(course: Course, generator: Generator, lego_id: str, prefix_upto: int | None, result: GenerateResult) -> None:
    """One basket; a :class:`GenerationError` is recorded as a failure, anything else is a bug."""
    try:
        generated = generator.generate(course.context(lego_id), prefix_upto=prefix_upto)
    except GenerationError as exc:
        with result.lock:
            result.failed[lego_id] = str(exc) or type(exc).__name__
        return
    with result.lock:
        result.baskets[lego_id] = generated


@click.command("generate")
@course_argument
@click.option("--backend", type=click.Choice(BACKENDS), default=None,
              help="Generator backend [default: $PHASE5_BACKEND, else corpus (offline)].")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=f"Basket file to write [default: COURSE/{DEFAULT_OUT_NAME}].")
@click.option("--concurrency", type=click.IntRange(min=1), default=DEFAULT_CONCURRENCY, show_default=True,
              help="Threads for API backends (the offline corpus backend runs in one).")
@api_options
@json_option
def generate_command(course: str, courses_dir: str | None, backend: str | None, out: Path | None,
                     concurrency: int, as_json: bool, **api: Any) -> None:
    """Generate a basket for every canonical LEGO of COURSE in this process (no tmux, no plan),
    write them as one {lego_id: basket} file and print a summary.

    Exit status 0 when every basket was made, 1 when some failed (the others are written),
    2 for bad input or a missing API key."""
    backend = backend or default_backend()
    require_api_key(backend)  # before anything starts
    loaded = load_course(course, courses_dir)
    path = out or loaded.root / DEFAULT_OUT_NAME
    options = generator_options(api)
    generator = make_generator(backend, loaded, options)
    threads = concurrency if backend in API_BACKENDS else 1
    started = time.perf_counter()
    progress = Progress(len(loaded.legos), f"generate {loaded.code} ({backend})")
    try:
        result = generate_course(loaded, generator, threads, on_basket=lambda _id: progress.advance())
    finally:
        progress.close()
        generator.close()
    ordered = {lego_id: result.baskets[lego_id].basket.to_json() for lego_id in loaded.ids
               if lego_id in result.baskets}
    write_json(path, ordered)
    seconds = time.perf_counter() - started
    summary = {"course": str(loaded.root), "backend": backend, "out": str(path), "threads": threads,
               "seconds": round(seconds, 3), **result.summary(loaded)}
    if as_json:
        echo_json(summary)
    else:
        _print_summary(summary)
    sys.exit(1 if result.failed else 0)


def _print_summary(s: dict[str, Any]) -> None:
    share = f"{100 * s['band_share']:.1f}%" if s["band_share"] is not None else "-"
    click.echo(f"{s['out']}: {s['baskets']}/{s['expected']} baskets, {s['e_phrases']} e-phrases,"
               f" {s['empty_baskets']} empty baskets, in {s['seconds']:.2f} s ({s['backend']})")
    click.echo(f"length band: {s['band_phrases_in_band']}/{s['band_phrases']} phrases in band ({share};"
               " culminating seed sentences not counted)")
    if s["requests"]:
        u = s["usage"]
        click.echo(f"requests {s['requests']}, repair rounds {s['repair_rounds']}, dropped phrases"
                   f" {s['dropped_phrases']}; tokens in {u['input_tokens']} out {u['output_tokens']}"
                   f" cache write {u['cache_creation_input_tokens']} cache read {u['cache_read_input_tokens']}")
    if s["failed"]:
        ids = list(s["failed"])
        click.echo(f"FAILED {len(ids)} baskets (not in the file): {', '.join(ids[:20])}"
                   f"{' ...' if len(ids) > 20 else ''}; first reason: {s['failed'][ids[0]]}")
    click.echo(f"check it with: phase5 validate {s['course']} {s['out']}")


COMMANDS = [generate_command]
