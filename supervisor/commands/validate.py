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
@click.option(
    "--min-usable",
    type=click.FloatRange(0, 100),
    default=None,
    metavar="PCT",
    help="Also exit 1 when fewer than PCT percent of the baskets are usable (3-5 e-phrases).",
)
def validate_command(
    course: str, courses_dir: str | None, baskets: Path | None, as_json: bool, limit: int, min_usable: float | None
) -> None:
    """Check BASKETS (default COURSE/lego_baskets.json; a bare {id: basket} map or a
    {"baskets": {...}} wrapper) against COURSE's rules. Every phrase of every basket is judged,
    even where a basket's format is wrong. The first line says PASS or FAIL and how many baskets
    a learner can use (3-5 e-phrases) and how many are empty.

    Exit status 0 when coverage is complete and every absolute rule (format, GATE, d-phrases,
    culminating first) holds (and, with --min-usable, enough baskets are usable), 1 otherwise,
    2 for unreadable input."""
    loaded = load_course(course, courses_dir)
    path = baskets or CourseLayout(loaded.root).final_baskets
    data, duplicates = load_basket_file(path)
    started = time.perf_counter()
    report = validate_baskets(loaded, data, duplicates)
    elapsed = time.perf_counter() - started
    enough = min_usable is None or 100 * report.usable_share >= min_usable
    if as_json:
        echo_json(
            {"file": str(path), "seconds": round(elapsed, 3), "min_usable": min_usable, "enough_usable": enough}
            | report.to_json()
        )
    else:
        echo(format_report(report, limit))
        if not enough:
            echo(f"usable    {100 * report.usable_share:.1f}% of the baskets, below --min-usable {min_usable:g}%")
        echo(f"checked   {path} in {elapsed:.2f} s")
    sys.exit(ExitCode.OK if report.ok and enough else ExitCode.FAILED)


COMMANDS = [validate_command]
