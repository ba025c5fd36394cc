"""Options and helpers shared by the commands."""

from __future__ import annotations

import json
from typing import Any, Callable

import click

from worker.course import Course
from worker.paths import resolve_course

F = Callable[..., Any]


def course_argument(func: F) -> F:
    """``COURSE`` plus ``--courses-dir``, resolved to a loaded :class:`Course` named ``course``."""

    def callback(ctx: click.Context, param: click.Parameter, value: str) -> str:
        return value

    func = click.option(
        "--courses-dir",
        envvar="PHASE5_COURSES_DIR",
        type=click.Path(file_okay=False),
        default=None,
        help="Where course codes are looked up [env PHASE5_COURSES_DIR; default ./vfs/courses].",
    )(func)
    return click.argument("course", callback=callback)(func)


def load_course(course: str, courses_dir: str | None) -> Course:
    return Course.load(resolve_course(course, courses_dir))


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts.")(func)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


def api_options(func: F) -> F:
    """Options of the API backends, shared by ``generate``, ``worker`` and ``run``."""
    from worker.generators import GeneratorOptions

    d = GeneratorOptions()
    options = [
        click.option("--model", default=d.model, show_default=True, help="Model for the API backends."),
        click.option("--max-tokens", default=d.max_tokens, show_default=True, help="Max output tokens per request."),
        click.option("--temperature", default=d.temperature, show_default=True, type=float),
        click.option("--timeout", default=d.timeout, show_default=True, type=float, help="Seconds per API request."),
        click.option("--retries", default=d.max_retries, show_default=True,
                     help="SDK retries per request (429, 5xx, timeouts), honouring retry-after."),
        click.option("--repair-rounds", default=d.repair_rounds, show_default=True,
                     help="Rounds in which failing phrases go back to the model with the reasons."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def generator_options(values: dict[str, Any]):  # -> GeneratorOptions
    from worker.generators import GeneratorOptions

    return GeneratorOptions(model=values["model"], max_tokens=values["max_tokens"], temperature=values["temperature"],
                            timeout=values["timeout"], max_retries=values["retries"],
                            repair_rounds=values["repair_rounds"])
