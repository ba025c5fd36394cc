"""Is an orchestrator's or a segment's basket file complete and valid?

The supervisor asks this before it launches a worker (a valid file means the work is done) and
when it polls (a file that appears is accepted only when it passes). Valid means: the file parses,
holds no duplicate ids, holds exactly the plan's LEGO ids for that orchestrator (or segment), and
every basket passes the absolute rules of :func:`worker.report.basket_problems`.
"""

from __future__ import annotations

from pathlib import Path

from worker.course import Course
from worker.errors import Phase5Error
from worker.paths import CourseLayout
from worker.plan import SegmentPlan, load_plan
from worker.report import basket_problems, load_basket_file


def file_problem(course: Course, path: Path, expected_ids: list[str]) -> str | None:
    """Why the basket file ``path`` is not a complete, valid set of ``expected_ids``; None when it is."""
    if not path.exists():
        return "missing"
    try:
        baskets, duplicates = load_basket_file(path)
    except Phase5Error as exc:
        return str(exc)
    if duplicates:
        return f"duplicate id {duplicates[0]}"
    problems = basket_problems(course, baskets, expected_ids)
    return problems[0] if problems else None


def orch_file_problem(course: Course, segment: int, orch: int, plan: SegmentPlan | None = None) -> str | None:
    """Why ``segment_SS/orch_OO_baskets.json`` is not complete and valid; None when it is."""
    plan = plan or load_plan(course, segment)
    path = CourseLayout(course.root).orch_baskets(segment, orch)
    return file_problem(course, path, plan.orchestrator(orch).lego_ids)


def segment_file_problem(course: Course, segment: int, plan: SegmentPlan | None = None) -> str | None:
    """Why ``segment_SS_baskets.json`` is not complete and valid; None when it is."""
    plan = plan or load_plan(course, segment)
    return file_problem(course, CourseLayout(course.root).segment_baskets(segment), plan.lego_ids)


def segment_file_ok(course: Course, segment: int, plan: SegmentPlan | None = None) -> bool:
    return segment_file_problem(course, segment, plan) is None
