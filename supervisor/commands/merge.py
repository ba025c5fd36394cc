"""``phase5 merge-segment`` and ``phase5 merge-final``: merges only, never generation."""

from __future__ import annotations

import click

from supervisor.commands.common import course_argument, echo, echo_json, json_option, load_course
from worker.merge import merge_final, merge_segment


@click.command("merge-segment")
@course_argument
@click.argument("segment", type=click.IntRange(min=1))
@json_option
def merge_segment_command(course: str, courses_dir: str | None, segment: int, as_json: bool) -> None:
    """Merge SEGMENT's orchestrator files into phase5_segments/segment_NN_baskets.json."""
    result = merge_segment(load_course(course, courses_dir), segment)
    echo_json(result.to_json()) if as_json else echo(result.summary())


@click.command("merge-final")
@course_argument
@json_option
def merge_final_command(course: str, courses_dir: str | None, as_json: bool) -> None:
    """Merge the segment files into lego_baskets.json, checked against lego_pairs.json."""
    result = merge_final(load_course(course, courses_dir))
    echo_json(result.to_json()) if as_json else echo(result.summary())


COMMANDS = [merge_segment_command, merge_final_command]
