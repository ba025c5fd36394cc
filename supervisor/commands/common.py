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
