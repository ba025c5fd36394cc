"""``phase5 run``: the supervisor (see :mod:`supervisor.runner`)."""

from __future__ import annotations

import sys

import click

from supervisor.commands.common import F, api_options, budget_options, course_argument, load_course
from supervisor.display import make_display
from supervisor.runner import DEFAULT_API_STAGGER, Runner, RunOptions, start_detached
from supervisor.tmux import SOCKET_ENV
from worker.generators import BACKENDS, default_backend, require_api_key


def tmux_socket_option(func: F) -> F:
    """``--tmux-socket NAME`` (env PHASE5_TMUX_SOCKET), shared by run, status, attach and stop."""
    return click.option(
        "--tmux-socket",
        envvar=SOCKET_ENV,
        default=None,
        metavar="NAME",
        help="tmux server socket name (tmux -L NAME) [env PHASE5_TMUX_SOCKET; default: your default tmux server]",
    )(func)


def _api_args(api: dict[str, object]) -> list[str]:
    """The API options as worker arguments (they carry no secret: the key is in the environment),
    ``--max-cost`` and ``--prices`` included."""
    return [f"--{name.replace('_', '-')}={value}" for name, value in api.items() if value is not None]


@click.command("run")
@course_argument
@click.option(
    "--backend", type=click.Choice(BACKENDS), default=default_backend, show_default="corpus or $PHASE5_BACKEND"
)
@click.option(
    "--stagger",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds between launches of a segment's orchestrators [default: 30 for API backends, 0 offline].",
)
@click.option(
    "--stagger-segments",
    type=click.Choice(["all", "first"]),
    default="all",
    show_default=True,
    help="Stagger the launches of every segment (as the original design), or only of the first one"
    " this run launches (later segments start while the API is still busy with the last).",
)
@click.option(
    "--poll",
    type=click.FloatRange(min=0.05),
    default=2.0,
    show_default=True,
    help="Seconds between looks at the files and panes.",
)
@click.option("--detach", is_flag=True, help="Start the supervisor in the tmux session's first window and return.")
@click.option("--segments", type=click.IntRange(min=1), default=None, help="Plan shape, when preparing [default 3].")
@click.option("--orchestrators", type=click.IntRange(min=1), default=None, help="Orchestrators per segment [3].")
@click.option("--agents", type=click.IntRange(min=1), default=None, help="Agents per orchestrator [10].")
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Launches of one orchestrator (a failed or stuck one is relaunched alone).",
)
@click.option(
    "--agent-attempts",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Attempts per agent inside a worker.",
)
@click.option(
    "--stuck-after",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    help="Seconds without a heartbeat before a worker is shown as STUCK.",
)
@click.option("--restart-stuck", is_flag=True, help="Kill and relaunch a stuck worker.")
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="Seconds between SIGTERM and SIGKILL when killing process trees.",
)
@click.option(
    "--warm-start/--cold-start",
    default=True,
    show_default=True,
    help="API backends: fork each worker from one process that has already imported the SDK and"
    " loaded the course (saves ~1.5 s of start-up and ~65 MB per worker), or start each cold.",
)
@click.option("--plain", is_flag=True, help="Plain lines even on a terminal.")
@click.option("--supervisor-window", is_flag=True, hidden=True)
@click.option(
    "--dry-run", is_flag=True, help="Print the estimate (requests, tokens, cost, time) and exit; no API call."
)
@tmux_socket_option
@api_options
@budget_options
def run_command(
    course: str,
    courses_dir: str | None,
    backend: str,
    stagger: float | None,
    stagger_segments: str,
    poll: float,
    detach: bool,
    segments: int | None,
    orchestrators: int | None,
    agents: int | None,
    max_attempts: int,
    agent_attempts: int,
    stuck_after: float,
    restart_stuck: bool,
    grace: float,
    warm_start: bool,
    plain: bool,
    supervisor_window: bool,
    dry_run: bool,
    tmux_socket: str | None,
    **api: object,
) -> None:
    """Generate every basket of COURSE: prepare if needed, then segment by segment, one tmux window
    per orchestrator in session phase5-<course>; merge, validate and summarise.

    Run it again after any crash: it resumes from the files, adopts live windows, never
    regenerates a saved basket. Exit status: 0 done and valid, 1 failed (an orchestrator out of
    attempts, or validation), 2 bad input or already running, 4 budget reached (--max-cost;
    resumable), 130/143 stopped by a signal."""
    if dry_run:
        _dry_run(course, courses_dir, stagger, segments, orchestrators, agents, api)
        return
    require_api_key(backend)
    loaded = load_course(course, courses_dir)
    options = RunOptions(
        backend=backend,
        stagger=stagger,
        poll=poll,
        max_attempts=max_attempts,
        agent_attempts=agent_attempts,
        stuck_after=stuck_after,
        restart_stuck=restart_stuck,
        tmux_socket=tmux_socket,
        segments=segments,
        orchestrators=orchestrators,
        agents=agents,
        api_args=_api_args(api),
        grace=grace,
        in_session=supervisor_window,
        warm_start=warm_start,
        stagger_segments=stagger_segments,
    )
    if detach:
        click.echo(start_detached(loaded, options))
        return
    display = make_display(plain)
    try:
        code = Runner(loaded, options, display).run()
    finally:
        display.close()
    sys.exit(code)


def _dry_run(
    course: str,
    courses_dir: str | None,
    stagger: float | None,
    segments: int | None,
    orchestrators: int | None,
    agents: int | None,
    api: dict[str, object],
) -> None:
    """``run --dry-run``: the estimate for this run's plan and model, for both API backends."""
    from worker.cost import PriceTable
    from worker.estimate import EstimateOptions, estimate, format_estimate

    loaded = load_course(course, courses_dir)
    table = PriceTable.load(api.get("prices"))  # type: ignore[arg-type]
    model = str(api["model"])
    table.price(model)
    options = EstimateOptions(
        model=model,
        repair_rounds=int(api["repair_rounds"]),  # type: ignore[call-overload]
        stagger=DEFAULT_API_STAGGER if stagger is None else stagger,
        segments=segments,
        orchestrators=orchestrators,
        agents=agents,
    )
    click.echo(format_estimate(estimate(loaded, options, table)))
    click.echo("dry run: nothing started (phase5 estimate has more options: --concurrency, --latency, ...)")


COMMANDS = [run_command]
