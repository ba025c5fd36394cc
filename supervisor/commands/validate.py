"""``phase5 validate``: the rule report for a basket file."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from supervisor.commands.common import course_argument, echo, echo_json, json_option, load_course
from worker.exitcodes import ExitCode
from worker.paths import CourseLayout
from worker.report import format_report, load_basket_file, validate_baskets


@click.command("validate")
@course_argument
@click.argument("baskets", required=False, type=click.Path(dir_okay=False, path_type=Path))
@json_option
@click.option("--limit", default=20, show_default=True, help="Problems listed in the text report.")
def validate_command(course: str, courses_dir: str | None, baskets: Path | None, as_json: bool, limit: int) -> None:
    """Check BASKETS (default COURSE/lego_baskets.json; a bare {id: basket} map or a
    {"baskets": {...}} wrapper) against COURSE's rules.

    Exit status 0 when coverage is complete and every absolute rule (format, GATE, d-phrases,
    culminating first) holds, 1 otherwise, 2 for unreadable input."""
    loaded = load_course(course, courses_dir)
    path = baskets or CourseLayout(loaded.root).final_baskets
    data, duplicates = load_basket_file(path)
    started = time.perf_counter()
    report = validate_baskets(loaded, data, duplicates)
    elapsed = time.perf_counter() - started
    if as_json:
        echo_json({"file": str(path), "seconds": round(elapsed, 3), **report.to_json()})
    else:
        echo(f"{path}  (checked in {elapsed:.2f} s)")
        echo(format_report(report, limit))
    sys.exit(ExitCode.OK if report.ok else ExitCode.FAILED)


COMMANDS = [validate_command]
