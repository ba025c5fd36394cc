"""``phase5 report``: the review page of a course, one self-contained HTML file
(:mod:`supervisor.report_page`)."""

from __future__ import annotations

from pathlib import Path

import click

from supervisor.commands.common import (
    baskets_option,
    course_argument,
    echo,
    echo_json,
    json_option,
    load_course,
    prices_option,
)
from worker.cost import PriceTable
from worker.paths import CourseLayout
from worker.report import load_basket_file

DEFAULT_NAME = "phase5_report.html"


@click.command("report")
@course_argument
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Where to write the page [default: COURSE/{DEFAULT_NAME}].",
)
@baskets_option
@prices_option
@json_option
def report_command(
    course: str, courses_dir: str | None, out: Path | None, baskets: Path | None, prices: str | None, as_json: bool
) -> None:
    """Write the review page of COURSE: one HTML file that opens in any browser with no server and
    no network. It holds the summary (coverage, usable and empty baskets, the rule figures of
    `validate`, languages, backends and models, tokens and cost, wall time, redos), charts (words
    per e-phrase against the length bands, e-phrases per basket, recency share), every flagged
    basket with its phrases and who made it (filter by flag, search by id or text), the data
    warnings, and the timeline of every run (one bar per window and launch)."""
    from supervisor.report_page import write_page

    loaded = load_course(course, courses_dir)
    layout = CourseLayout(loaded.root)
    source = baskets or layout.final_baskets
    data, _ = load_basket_file(source)
    target = out or loaded.root / DEFAULT_NAME
    facts = write_page(loaded, data, source, target, PriceTable.load(prices))
    size = target.stat().st_size
    if as_json:
        echo_json(
            {
                "file": str(target),
                "bytes": size,
                "flagged": len(facts.flagged),
                "empty": facts.empty,
                "charts": facts.charts,
                "runs": facts.runs,
            }
        )
        return
    echo(
        f"wrote {target} ({size / 1024:.0f} KB): {len(facts.flagged)} flagged baskets ({len(facts.empty)} empty),"
        f" {facts.charts} charts, {facts.runs} run(s) on the timeline; open it in a browser"
    )


COMMANDS = [report_command]
