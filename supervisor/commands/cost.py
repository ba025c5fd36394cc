"""``phase5 cost``: token usage and spend of a course's run, from the agents' journals."""

from __future__ import annotations

from typing import Any

import click

from supervisor.commands.common import course_argument, echo_json, json_option, load_course, prices_option
from worker.cost import PriceTable, course_spend
from worker.plan import load_plans


def _line(label: str, node: dict[str, Any]) -> str:
    t = node["tokens"]
    return (
        f"{label:<14} ${node['cost_usd']:>9.4f}  baskets {node['baskets']:>5}  requests {node['requests']:>5}"
        f"  in {t['input_tokens']:>9}  out {t['output_tokens']:>8}"
        f"  cache w {t['cache_creation_input_tokens']:>8}  r {t['cache_read_input_tokens']:>9}"
    )


@click.command("cost")
@course_argument
@prices_option
@click.option("--per-basket", is_flag=True, help="With --json, include every basket's usage.")
@click.option("--agents", "show_agents", is_flag=True, help="List agents too in the text report.")
@json_option
def cost_command(
    course: str, courses_dir: str | None, prices: str | None, per_basket: bool, show_agents: bool, as_json: bool
) -> None:
    """Token usage (input, output, cache write, cache read) and cost per segment, orchestrator,
    agent and run, read from the agents' journals and priced from the price table. Redos
    (`phase5 redo`) are listed as segments of their own and counted in the run's total."""
    loaded = load_course(course, courses_dir)
    tree = course_spend(loaded, load_plans(loaded, include_redo=True), PriceTable.load(prices), per_basket=per_basket)
    if as_json:
        echo_json(tree)
        return
    click.echo(_line("run", tree["run"]))
    for seg in tree["segments"]:
        label = f"  redo {seg['redo']} (s{seg['segment']})" if seg.get("redo") else f"  segment {seg['segment']}"
        click.echo(_line(label, seg))
        for orch in seg["orchestrators"]:
            click.echo(_line(f"    s{seg['segment']}-o{orch['orch']}", orch))
            if show_agents:
                for agent in orch["agents"]:
                    click.echo(_line(f"      agent {agent['agent']:02d}", agent))
    gain = tree["repairs"]
    if gain["baskets"]:
        click.echo(
            f"repairs: {gain['repaired']} of {gain['baskets']} baskets had repair rounds; baskets with 3+ e-phrases:"
            f" {gain['full_first']} from first answers alone, {gain['full_final']} after repairs"
            f" (+{gain['full_final'] - gain['full_first']})"
        )
    click.echo(f"prices: {', '.join(tree['prices'])}")


COMMANDS = [cost_command]
