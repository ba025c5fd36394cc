"""``phase5 generate``: every canonical LEGO's basket in one process, without tmux.

For people trying a backend and for tests: the same generators and the same basket format as
``run``, but no plan, no segments and no resume; the result is one ``{lego_id: basket}`` file.
With ``anthropic-batch``, all baskets go as one Message Batch per round (its state file beside
the output, removed at the end); ``--max-cost`` stops starting requests at a spend (exit 4).
"""

from __future__ import annotations

import sys
import time
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
from worker.exitcodes import ExitCode
from worker.generate import DEFAULT_CONCURRENCY, GenerateResult, generate_course
from worker.generators import (
    API_BACKENDS,
    BACKENDS,
    check_backend,
    default_backend,
    make_generator,
)
from worker.paths import course_arg

DEFAULT_OUT_NAME = "generated_baskets.json"


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
