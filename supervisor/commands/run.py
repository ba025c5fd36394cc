"""``phase5 run``: the supervisor (see :mod:`supervisor.runner`); its options are
:class:`supervisor.options.RunOptions`."""

from __future__ import annotations

import sys
from typing import cast

import click

from supervisor.commands.common import api_options, budget_options, course_argument, generator_options, load_course
from supervisor.detach import start_detached
from supervisor.display import make_display
from supervisor.options import DEFAULT_API_STAGGER, RunOptions, run_options
from supervisor.runner import Runner, early_fork_server
from worker.generators import check_backend
from worker.paths import resolve_course


@click.command("run")
@course_argument
@run_options
@click.option("--detach", is_flag=True, help="Start the supervisor in the tmux session's first window and return.")
@click.option("--plain", is_flag=True, help="Plain lines even on a terminal.")
@click.option(
    "--dry-run", is_flag=True, help="Print the estimate (requests, tokens, cost, time) and exit; no API call."
)
@api_options
@budget_options
def run_command(
    course: str, courses_dir: str | None, detach: bool, plain: bool, dry_run: bool, **values: object
) -> None:
    """Generate every basket of COURSE: prepare if needed, then segment by segment, one tmux window
    per orchestrator in session phase5-<course>; merge, validate and summarise.

    Run it again after any crash: it resumes from the files, adopts live windows, never
    regenerates a saved basket. Exit status: 0 done and valid, 1 failed (an orchestrator out of
    attempts, or validation), 2 bad input or already running, 4 budget reached (--max-cost;
    resumable), 130/143 stopped by a signal."""
    options = RunOptions.from_cli(values)
    if dry_run:
        _dry_run(course, courses_dir, options)
        return
    check_backend(options.backend, generator_options(options.api))
    # Started first: its imports are the longest part of a run's start, and go on meanwhile.
    forks = None if detach else early_fork_server(resolve_course(course, courses_dir), options)
    try:
        loaded = load_course(course, courses_dir, remember_languages=True)
        if detach:
            click.echo(start_detached(loaded, options))
            return
        display = make_display(plain)
        try:
            code = Runner(loaded, options, display, forks=forks).run()
        finally:
            display.close()
    finally:
        if forks is not None:
            forks.stop(options.grace)
    sys.exit(code)


def _dry_run(course: str, courses_dir: str | None, options: RunOptions) -> None:
    """``run --dry-run``: the estimate for this run's plan and model, for both API backends."""
    from worker.cost import PriceTable
    from worker.estimate import EstimateOptions, estimate, format_estimate

    loaded = load_course(course, courses_dir)
    api = options.api
    prices = api.get("prices")
    table = PriceTable.load(str(prices) if prices is not None else None)
    model = str(api["model"])
    table.price(model)
    estimate_options = EstimateOptions(
        model=model,
        repair_rounds=cast(int, api["repair_rounds"]),
        window_rate=0.0 if api.get("d_windows") == "leave" else EstimateOptions().window_rate,
        stagger=DEFAULT_API_STAGGER if options.stagger is None else options.stagger,
        segments=options.segments,
        orchestrators=options.orchestrators,
        agents=options.agents,
    )
    click.echo(format_estimate(estimate(loaded, estimate_options, table)))
    click.echo("dry run: nothing started (phase5 estimate has more options: --concurrency, --latency, ...)")


COMMANDS = [run_command]
