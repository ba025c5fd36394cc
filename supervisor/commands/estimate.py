"""``phase5 estimate``: requests, tokens, cost and time of a run, before spending anything."""

from __future__ import annotations

import click

from supervisor.commands.common import course_argument, echo_json, json_option, load_course, prices_option
from worker.cost import PriceTable
from worker.estimate import (
    API_BACKENDS,
    DEFAULT_BATCH_TURNAROUND,
    DEFAULT_LATENCY,
    DEFAULT_REPAIR_RATE,
    DEFAULT_STAGGER,
    DEFAULT_TAIL,
    DEFAULT_THINKING_TOKENS,
    DEFAULT_TIER,
    DEFAULT_WINDOW_RATE,
    TIERS,
    EstimateOptions,
    estimate,
    format_estimate,
    measure_prompt_factor,
)
from worker.generators import GeneratorOptions, require_api_key
from worker.generators.model_table import model_caps


@click.command("estimate")
@course_argument
@click.option(
    "--backend",
    type=click.Choice([*API_BACKENDS, "both"]),
    default="both",
    show_default=True,
    help="Which API backend's cost and time to show.",
)
@click.option("--model", default=GeneratorOptions().model, show_default=True, help="Model to price.")
@click.option(
    "--tier",
    type=click.Choice(sorted(TIERS)),
    default=DEFAULT_TIER,
    show_default=True,
    help="The account's usage tier: its requests, input and output tokens a minute (anthropic).",
)
@click.option("--rpm", type=click.FloatRange(min=1), default=None, help="Requests a minute instead of the tier's.")
@click.option("--itpm", type=click.FloatRange(min=1), default=None, help="Input tokens a minute instead.")
@click.option("--otpm", type=click.FloatRange(min=1), default=None, help="Output tokens a minute instead.")
@click.option(
    "--max-in-flight",
    type=click.IntRange(min=1),
    default=GeneratorOptions().max_in_flight,
    show_default=True,
    help="Requests in flight at most per worker (anthropic), as phase5 run --max-in-flight.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Requests in flight at most in a segment, whatever the workers' caps (anthropic).",
)
@click.option(
    "--tail",
    type=click.FloatRange(min=0),
    default=DEFAULT_TAIL,
    show_default=True,
    help="Latencies from a segment's last request to its last answer (the slowest answer).",
)
@click.option(
    "--latency",
    type=click.FloatRange(min=0),
    default=DEFAULT_LATENCY,
    show_default=True,
    help="Seconds per request (anthropic).",
)
@click.option(
    "--batch-turnaround",
    type=click.FloatRange(min=0),
    default=DEFAULT_BATCH_TURNAROUND,
    show_default=True,
    help="Seconds for a batch to end (anthropic-batch).",
)
@click.option(
    "--stagger",
    type=click.FloatRange(min=0),
    default=DEFAULT_STAGGER,
    show_default=True,
    help="Seconds between launches of a segment's orchestrators.",
)
@click.option(
    "--repair-rate",
    type=click.FloatRange(0, 1),
    default=DEFAULT_REPAIR_RATE,
    show_default=True,
    help="Share of answers that need a repair round.",
)
@click.option(
    "--repair-rounds",
    type=click.IntRange(min=0),
    default=GeneratorOptions().repair_rounds,
    show_default=True,
    help="Repair rounds at most per basket.",
)
@click.option(
    "--window-rate",
    type=click.FloatRange(0, 1),
    default=DEFAULT_WINDOW_RATE,
    show_default=True,
    help="Share of baskets whose phrases leave d windows without an aligned known side, for which one more"
    " request asks the model (0 for runs with --d-windows leave).",
)
@click.option(
    "--thinking-tokens",
    type=click.IntRange(min=0),
    default=DEFAULT_THINKING_TOKENS,
    show_default=True,
    help="Thinking tokens per answer on models that think by default (billed as output).",
)
@click.option(
    "--count-tokens",
    is_flag=True,
    help="Count prompt tokens with the API's free count_tokens endpoint on a few sampled requests (needs"
    " ANTHROPIC_API_KEY; generates nothing) and scale the estimate by it.",
)
@click.option("--segments", type=click.IntRange(min=1), default=None, help="Plan shape when not prepared [3].")
@click.option("--orchestrators", type=click.IntRange(min=1), default=None, help="Orchestrators per segment [3].")
@click.option("--agents", type=click.IntRange(min=1), default=None, help="Agents per orchestrator [10].")
@prices_option
@json_option
def estimate_command(
    course: str,
    courses_dir: str | None,
    backend: str,
    model: str,
    tier: str,
    rpm: float | None,
    itpm: float | None,
    otpm: float | None,
    max_in_flight: int,
    concurrency: int | None,
    tail: float,
    latency: float,
    batch_turnaround: float,
    stagger: float,
    repair_rate: float,
    repair_rounds: int,
    window_rate: float,
    thinking_tokens: int,
    count_tokens: bool,
    segments: int | None,
    orchestrators: int | None,
    agents: int | None,
    prices: str | None,
    as_json: bool,
) -> None:
    """Expected requests, input and output tokens (with and without prompt caching), cost and wall
    time of generating COURSE with the API backends, from the prompts they would send, counted with
    the model's tokenizer factor. Calls no API, except with --count-tokens (the free token-count
    endpoint). Uses the course's plan when prepared, else the plan `prepare` would write."""
    loaded = load_course(course, courses_dir)
    table = PriceTable.load(prices)
    table.price(model)  # an unknown model: one line, exit 2
    model_caps(model)
    options = EstimateOptions(
        model=model,
        repair_rate=repair_rate,
        repair_rounds=repair_rounds,
        window_rate=window_rate,
        concurrency=concurrency,
        latency=latency,
        tier=tier,
        rpm=rpm,
        itpm=itpm,
        otpm=otpm,
        max_in_flight=max_in_flight,
        tail=tail,
        batch_turnaround=batch_turnaround,
        stagger=stagger,
        segments=segments,
        orchestrators=orchestrators,
        agents=agents,
        thinking_tokens=thinking_tokens,
    )
    if count_tokens:
        require_api_key("anthropic")
        options.prompt_factor, options.prompt_method = measure_prompt_factor(loaded, options)
    backends = API_BACKENDS if backend == "both" else (backend,)
    result = estimate(loaded, options, table, backends)
    if as_json:
        echo_json(result.to_json())
    else:
        click.echo(format_estimate(result))


COMMANDS = [estimate_command]
