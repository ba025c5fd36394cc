"""``phase5 prepare``: the segment plan files and folders."""

from __future__ import annotations

import click

from supervisor.commands.common import course_argument, echo, echo_json, json_option, load_course
from worker.plan import DEFAULT_AGENTS, DEFAULT_ORCHESTRATORS, DEFAULT_SEGMENTS, prepare
from worker.report import format_warnings


@click.command("prepare")
@course_argument
@click.option("--segments", default=DEFAULT_SEGMENTS, show_default=True, help="Segments, run one after another.")
@click.option(
    "--orchestrators",
    default=DEFAULT_ORCHESTRATORS,
    show_default=True,
    help="Orchestrators (tmux windows) per segment.",
)
@click.option("--agents", default=DEFAULT_AGENTS, show_default=True, help="Agents per orchestrator.")
@click.option(
    "--force", is_flag=True, help="Replace a different existing plan; its folder is moved aside, not deleted."
)
@json_option
def prepare_command(
    course: str, courses_dir: str | None, segments: int, orchestrators: int, agents: int, force: bool, as_json: bool
) -> None:
    """Split COURSE's canonical LEGOs into segments x orchestrators x agents, in canonical order,
    as evenly as possible, and write phase5_segments/segment_NN.json and the orch folders.

    Re-running with the same options changes nothing."""
    loaded = load_course(course, courses_dir, remember_languages=True)
    result = prepare(loaded, segments, orchestrators, agents, force)
    if as_json:
        echo_json(
            {
                "course": str(loaded.root),
                "languages": loaded.languages.to_json(),
                "data_warnings": [w.to_json() for w in loaded.warnings],
                "changed": result.changed,
                "baskets": len(loaded.legos),
                "moved_aside": str(result.moved_aside) if result.moved_aside else None,
                "rewritten": result.rewritten,
                "segments": [
                    {
                        "segment": p.segment_number,
                        "legos": p.total_legos,
                        "orchestrators": [
                            {
                                "orch": b.orchestrator_id,
                                "legos": b.total_legos,
                                "agents": [len(a) for a in b.agent_batches],
                            }
                            for b in p.orchestrator_batches
                        ],
                    }
                    for p in result.plans
                ],
            }
        )
        return
    if result.moved_aside:
        echo(f"old plan and baskets moved aside to {result.moved_aside}")
    for name in result.rewritten:
        echo(f"plan file {name} written again: the other plan files and the saved baskets agree with it")
    echo(
        f"{loaded.root}: {len(loaded.legos)} baskets to make "
        f"({'plan written' if result.changed else 'plan already in place, nothing changed'})"
    )
    for plan in result.plans:
        orchs = ", ".join(
            f"o{b.orchestrator_id}={b.total_legos}/{len(b.agent_batches)} agents" for b in plan.orchestrator_batches
        )
        echo(f"  segment {plan.segment_number}: {plan.total_legos} LEGOs  ({orchs})")
    echo(f"  course: {loaded.description} (languages from {loaded.languages.source})")
    for line in format_warnings([w.to_json() for w in loaded.warnings]):
        echo(f"  {line}")


COMMANDS = [prepare_command]
