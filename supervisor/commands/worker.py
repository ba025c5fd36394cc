"""``phase5 worker``: one orchestrator, the process that runs inside a tmux window."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import NoReturn

import click

from supervisor.commands.common import api_options, budget_options, generator_options
from worker.course import Course
from worker.errors import Phase5Error, as_phase5_error
from worker.exitcodes import ExitCode
from worker.generators import BACKENDS, check_backend, default_backend
from worker.orchestrator import Busy, Orchestrator, WorkerSettings, record_failure
from worker.pane import PaneDisplay, PlainPaneDisplay
from worker.paths import CourseLayout
from worker.safetext import printable


@click.command("worker")
@click.argument("course", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--segment", required=True, type=click.IntRange(min=1), help="Segment number.")
@click.option("--orch", required=True, type=click.IntRange(min=1), help="Orchestrator number in the segment.")
@click.option(
    "--backend", type=click.Choice(BACKENDS), default=default_backend, show_default="corpus or $PHASE5_BACKEND"
)
@click.option(
    "--max-attempts",
    default=3,
    show_default=True,
    help="Attempts per LEGO; an agent fails when one of its LEGOs has used them all.",
)
@click.option("--plain", is_flag=True, help="Plain progress lines even on a terminal.")
@api_options
@budget_options
def worker_command(
    course: Path,
    segment: int,
    orch: int,
    backend: str,
    max_attempts: int,
    plain: bool,
    max_cost: float | None,
    prices: str | None,
    **api: object,
) -> None:
    """Run orchestrator ORCH of SEGMENT of the course folder COURSE: its agents concurrently, each
    basket saved as soon as it is made, a failed agent retried alone, then the orchestrator file.

    Normally started by `phase5 run` in a tmux window. Exit status: 0 done, 1 agents failed,
    2 bad input, 3 already running elsewhere, 4 budget reached (--max-cost; run again with a
    higher one to resume), 130/143 stopped by a signal."""
    try:
        _work(course, segment, orch, backend, max_attempts, plain, max_cost, prices, api)
    except Busy:
        raise  # the other worker's progress file is not this one's to write
    except (Phase5Error, OSError) as exc:
        # The supervisor reads why a worker ended from its progress file, not from its pane.
        layout = CourseLayout(course)
        error = exc if isinstance(exc, Phase5Error) else as_phase5_error(exc, layout.orch_dir(segment, orch))
        record_failure(layout, segment, orch, printable(error))
        raise error from None


def _work(
    course: Path,
    segment: int,
    orch: int,
    backend: str,
    max_attempts: int,
    plain: bool,
    max_cost: float | None,
    prices: str | None,
    api: dict[str, object],
) -> None:
    options = generator_options(api)
    check_backend(backend, options)
    settings = WorkerSettings(
        segment=segment,
        orch=orch,
        backend=backend,
        options=options,
        max_attempts=max_attempts,
        max_cost=max_cost,
        prices=prices,
    )
    orchestrator = Orchestrator(Course.load(course), settings)
    display = PlainPaneDisplay() if plain or not sys.stdout.isatty() else PaneDisplay()
    try:
        code = orchestrator.run(on_tick=display.update)
    finally:
        display.close(orchestrator)
    if code == ExitCode.BUDGET:
        click.echo(orchestrator.budget.message(), err=True)
    end_process(code)


def end_process(code: int) -> NoReturn:
    """Exit with ``code``. A worker in its window (``python -m supervisor.cli worker``) skips the
    interpreter's teardown (``os._exit``): freeing the SDK's ~3,500 modules costs ~0.3 s of CPU
    right when the segment ends and the next one's workers start on the same cores, and the
    supervisor may wait for the process to end. Nothing is lost: every file is written
    atomically and closed, the journals are fsynced, the lock and the API client are released
    by now; only the standard streams need a flush. Run any other way (tests in-process), a
    normal exit."""
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None) == "supervisor.cli":
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    sys.exit(code)


COMMANDS = [worker_command]
