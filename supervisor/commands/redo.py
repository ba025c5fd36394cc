"""``phase5 redo``: regenerate chosen baskets of a finished course through the supervisor (tmux
windows, journals, resume, budget), then put them into ``lego_baskets.json`` with every other
basket unchanged byte for byte (:mod:`worker.redo`, :mod:`supervisor.redo`)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, cast

import click

from supervisor.commands.common import api_options, budget_options, course_argument, echo, echo_json, load_course
from supervisor.display import make_display
from supervisor.options import RunOptions, run_options
from supervisor.redo import RedoJob, RedoRequest, to_resume
from supervisor.runner import Runner
from worker.course import Course
from worker.errors import InputError, Phase5Error
from worker.generators import API_BACKENDS, require_api_key
from worker.plan import DEFAULT_AGENTS, DEFAULT_ORCHESTRATORS, make_plans
from worker.redo import DEFAULT_REDO_SEGMENTS, WHERE, Redo, final_baskets, parse_ids, select_where

SHOWN_IDS = 10  # ids a dry run lists


@click.command("redo")
@course_argument
@click.option(
    "--where",
    multiple=True,
    type=click.Choice(WHERE),
    help="Redo the baskets `validate` flags so (repeat for several; flagged: any flag).",
)
@click.option("--ids", "ids_text", metavar="ID,...", help="Redo these baskets (LEGO ids, comma-separated).")
@click.option(
    "--ids-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Redo the baskets whose ids FILE lists (one per line, or separated by commas or spaces; # comments).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Finish the redo that did not finish (a crash, stop or budget), with its backend and model.",
)
@run_options
@click.option("--plain", is_flag=True, help="Plain lines even on a terminal.")
@click.option(
    "--dry-run", is_flag=True, help="Print how many baskets would be redone and the estimated cost; change nothing."
)
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: one JSON object for scripts.")
@api_options
@budget_options
def redo_command(
    course: str,
    courses_dir: str | None,
    where: tuple[str, ...],
    ids_text: str | None,
    ids_file: Path | None,
    resume: bool,
    plain: bool,
    dry_run: bool,
    as_json: bool,
    **values: Any,
) -> None:
    """Regenerate only the chosen baskets of COURSE's finished run, then merge them into
    lego_baskets.json: every other basket stays unchanged, byte for byte.

    Choose with --where (empty, short, out-of-band, flagged or any other flag of `validate`),
    --ids or --ids-file. The baskets run as a segment of their own through the same machinery
    as `phase5 run`: tmux windows in session phase5-<course>, journals (each basket recorded with
    its backend, model, time and redo number; `phase5 cost` adds them up), --max-cost (the
    redo's own spend), resume. A redo that did not finish is resumed with --resume (or the same
    selection); a new one waits until it is done. Backend and model default as for `run`: use
    --backend anthropic --model ... to redo with Claude. --segments, --orchestrators and --agents
    shape the redo's own plan (default 1 segment of 3 x 10, fewer for fewer baskets).

    Exit status: 0 done and valid, 1 failed, 2 bad input or already running, 4 budget reached
    (resumable), 130/143 stopped by a signal."""
    loaded = load_course(course, courses_dir)
    chosen = [bool(where), ids_text is not None, ids_file is not None, resume]
    if sum(chosen) != 1:
        raise click.UsageError("choose the baskets with exactly one of --where, --ids, --ids-file or --resume")
    options = RunOptions.from_cli(values)
    request = _request(loaded, where, ids_text, ids_file, options)
    pending = to_resume(loaded, request)
    if pending is not None:
        options, request = _resumed(pending, options, request)
    if dry_run:
        _dry_run(loaded, request, options, pending, as_json)
        return
    if as_json:
        raise click.UsageError("--json goes with --dry-run (a redo prints its progress and summary)")
    require_api_key(options.backend)
    if pending is not None:
        echo(f"resuming {pending.describe()}")
    display = make_display(plain)
    try:
        code = Runner(loaded, options, display, job=RedoJob(request)).run()
    finally:
        display.close()
    sys.exit(code)


def _request(
    course: Course, where: tuple[str, ...], ids_text: str | None, ids_file: Path | None, options: RunOptions
) -> RedoRequest:
    """The baskets asked for, checked against the course and its lego_baskets.json."""
    baskets, _ = final_baskets(course)
    ids: list[str] | None
    if where:
        ids, selection = select_where(course, baskets, where), "where " + ", ".join(where)
    elif ids_text is not None:
        ids = parse_ids(ids_text, course, "--ids")
        selection = "ids " + ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
    elif ids_file is not None:
        try:
            text = ids_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(ids_file, f"cannot be read ({exc})") from None
        ids, selection = parse_ids(text, course, str(ids_file)), f"ids from {ids_file.name}"
    else:
        ids, selection = None, "resumed"
    model = str(options.api.get("model")) if options.backend in API_BACKENDS else None
    return RedoRequest(
        ids=ids,
        selection=selection,
        backend=options.backend,
        model=model,
        segments=options.segments,
        orchestrators=options.orchestrators,
        agents=options.agents,
    )


def _resumed(pending: Redo, options: RunOptions, request: RedoRequest) -> tuple[RunOptions, RedoRequest]:
    """A resumed redo keeps the backend and model it was started with; naming others is refused."""
    ctx = click.get_current_context()
    info = pending.info
    given_backend = ctx.get_parameter_source("backend") in (
        click.core.ParameterSource.COMMANDLINE,
        click.core.ParameterSource.ENVIRONMENT,
    )
    given_model = ctx.get_parameter_source("model") == click.core.ParameterSource.COMMANDLINE
    if given_backend and options.backend != info.backend:
        raise Phase5Error(f"redo {info.number} was started with backend {info.backend}; resume it with the same")
    if given_model and info.model and options.api.get("model") != info.model:
        raise Phase5Error(f"redo {info.number} was started with model {info.model}; resume it with the same")
    api = dict(options.api)
    if info.model:
        api["model"] = info.model
    options = dataclasses.replace(options, backend=info.backend, api=api)
    return options, dataclasses.replace(request, ids=pending.ids, backend=info.backend, model=info.model)


def _dry_run(course: Course, request: RedoRequest, options: RunOptions, pending: Redo | None, as_json: bool) -> None:
    """How many baskets, which, and what they would cost; nothing written."""
    ids = request.ids or []
    data: dict[str, Any] = {
        "course": str(course.root),
        "baskets": len(ids),
        "ids": ids,
        "selection": request.selection,
        "backend": request.backend,
        "model": request.model,
        "resumes": pending.number if pending is not None else None,
        "estimate": None,
    }
    if ids and request.backend in API_BACKENDS:
        data["estimate"] = _estimate(course, request, options)
    if as_json:
        echo_json(data)
        return
    what = f"resume redo {pending.number}: " if pending is not None else "redo "
    echo(f"{what}{len(ids)} baskets of {course.root.name} ({course.description}), {request.selection}")
    if ids:
        echo("  " + ", ".join(ids[:SHOWN_IDS]) + (f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else ""))
    estimate = data["estimate"]
    if estimate is None:
        echo(f"  backend {request.backend}: offline, no cost")
    else:
        cost = estimate["backends"][request.backend]["cost_usd"]
        echo(
            f"  backend {request.backend}, model {request.model}: estimated ${cost['with_cache']:,.4f} with prompt"
            f" caching (${cost['without_cache']:,.4f} without), {estimate['requests']['total']:g} requests"
            f" (phase5 estimate's method)"
        )
    echo("dry run: nothing written, nothing started")


def _estimate(course: Course, request: RedoRequest, options: RunOptions) -> dict[str, Any]:
    from worker.cost import PriceTable
    from worker.estimate import DEFAULT_STAGGER, EstimateOptions, estimate

    api = options.api
    prices = api.get("prices")
    table = PriceTable.load(str(prices) if prices is not None else None)
    table.price(str(request.model))  # an unknown model: one line, exit 2
    plans = make_plans(
        request.ids or [],
        min(request.segments or DEFAULT_REDO_SEGMENTS, len(request.ids or [1])),
        request.orchestrators or DEFAULT_ORCHESTRATORS,
        request.agents or DEFAULT_AGENTS,
    )
    estimate_options = EstimateOptions(
        model=str(request.model),
        repair_rounds=cast(int, api["repair_rounds"]),
        stagger=DEFAULT_STAGGER if options.stagger is None else options.stagger,
    )
    return estimate(course, estimate_options, table, (request.backend,), plans=plans).to_json()


COMMANDS = [redo_command]
