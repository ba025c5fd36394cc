"""``prepare``: split the canonical order into segments × orchestrators × agents (SPEC §3-§4).

The plan files keep the original's shape so existing tools can read them.

>>> split_evenly(list(range(7)), 3)
[[0, 1, 2], [3, 4], [5, 6]]
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from worker.atomic import write_json
from worker.course import Course
from worker.errors import InputError, Phase5Error
from worker.models import read_json_file
from worker.paths import CourseLayout
from worker.safetext import quote_id

T = TypeVar("T")

DEFAULT_SEGMENTS = 3
DEFAULT_ORCHESTRATORS = 3
DEFAULT_AGENTS = 10


class OrchestratorBatch(BaseModel):
    model_config = ConfigDict(extra="allow")

    orchestrator_id: int
    total_legos: int
    lego_ids: list[str]
    agent_batches: list[list[str]]


class SegmentPlan(BaseModel):
    model_config = ConfigDict(extra="allow")

    segment_number: int
    total_legos: int
    orchestrator_count: int
    agents_per_orchestrator: int
    orchestrator_batches: list[OrchestratorBatch]
    total_segments: int | None = None

    def orchestrator(self, orch: int) -> OrchestratorBatch:
        for batch in self.orchestrator_batches:
            if batch.orchestrator_id == orch:
                return batch
        raise Phase5Error(f"segment {self.segment_number} has no orchestrator {orch}")

    @property
    def lego_ids(self) -> list[str]:
        return [i for batch in self.orchestrator_batches for i in batch.lego_ids]


def split_evenly(items: Sequence[T], parts: int) -> list[list[T]]:
    """``parts`` consecutive slices whose sizes differ by at most one, larger ones first."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        out.append(list(items[start:end]))
        start = end
    return out


def make_plans(ids: Sequence[str], segments: int, orchestrators: int, agents: int) -> list[SegmentPlan]:
    for name, value in (("segments", segments), ("orchestrators", orchestrators), ("agents", agents)):
        if value < 1:
            raise Phase5Error(f"--{name} must be at least 1, got {value}")
    plans = []
    for number, segment_ids in enumerate(split_evenly(ids, segments), start=1):
        batches = []
        for orch_id, orch_ids in enumerate(split_evenly(segment_ids, orchestrators), start=1):
            if not orch_ids:
                continue
            agent_batches = [b for b in split_evenly(orch_ids, agents) if b]
            batches.append(
                OrchestratorBatch(
                    orchestrator_id=orch_id, total_legos=len(orch_ids), lego_ids=orch_ids, agent_batches=agent_batches
                )
            )
        plans.append(
            SegmentPlan(
                segment_number=number,
                total_legos=len(segment_ids),
                orchestrator_count=len(batches),
                agents_per_orchestrator=agents,
                orchestrator_batches=batches,
                total_segments=segments,
            )
        )
    return plans


@dataclass
class PrepareResult:
    plans: list[SegmentPlan]
    changed: bool
    moved_aside: Path | None = None


def prepare(
    course: Course,
    segments: int = DEFAULT_SEGMENTS,
    orchestrators: int = DEFAULT_ORCHESTRATORS,
    agents: int = DEFAULT_AGENTS,
    force: bool = False,
) -> PrepareResult:
    """Write the plan files and folders; a no-op when the same plan is already there.

    A different plan while baskets exist is refused unless ``force``, which moves the old
    ``phase5_segments`` folder aside (renamed, never deleted) before writing the new plan.
    """
    layout = CourseLayout(course.root)
    plans = make_plans(course.ids, segments, orchestrators, agents)
    existing = _existing_plans(layout)
    if existing == [p.model_dump() for p in plans]:
        return PrepareResult(plans, changed=False)
    moved = None
    if has_outputs(layout):  # even when the plan files were deleted: never overwrite saved work
        if not force:
            raise Phase5Error(
                f"{layout.segments_dir}: a different plan with saved baskets exists; rerun with the same"
                " options, or add --force to move the old folder aside and start a new plan"
            )
        moved = _aside_name(layout.segments_dir)
        shutil.move(str(layout.segments_dir), moved)
    for stale in layout.plan_files():
        stale.unlink()
    for plan in plans:
        for batch in plan.orchestrator_batches:
            layout.orch_dir(plan.segment_number, batch.orchestrator_id).mkdir(parents=True, exist_ok=True)
        write_json(layout.segment_plan(plan.segment_number), plan.model_dump(exclude_none=True), indent=2)
    return PrepareResult(plans, changed=True, moved_aside=moved)


def _aside_name(folder: Path) -> Path:
    """A free name beside ``folder``: two --force runs in one second must not collide, since
    ``shutil.move`` onto an existing folder would move the old plan *into* it."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = folder.with_name(f"{folder.name}.old-{stamp}")
    counter = 1
    while candidate.exists():
        counter += 1
        candidate = folder.with_name(f"{folder.name}.old-{stamp}-{counter}")
    return candidate


def has_outputs(layout: CourseLayout) -> bool:
    """Any basket file or journal under ``phase5_segments``."""
    if not layout.segments_dir.is_dir():
        return False
    return any(layout.segments_dir.rglob("*_baskets.json")) or any(layout.segments_dir.rglob("*.jsonl"))


def _existing_plans(layout: CourseLayout) -> list[dict]:
    out = []
    for path in layout.plan_files():
        try:
            out.append(SegmentPlan.model_validate(read_json_file(path)).model_dump())
        except (InputError, ValidationError):
            return [{"unreadable": str(path)}]
    return out


def load_plans(course: Course) -> list[SegmentPlan]:
    """The plan files of a prepared course, checked against the course's canonical ids."""
    layout = CourseLayout(course.root)
    files = layout.plan_files()
    if not files:
        raise Phase5Error(f"{layout.segments_dir}: no segment plans; run `phase5 prepare` first")
    plans = []
    for path in files:
        try:
            plan = SegmentPlan.model_validate(read_json_file(path))
        except ValidationError as exc:
            error = exc.errors()[0]
            raise InputError(path, f"{'.'.join(map(str, error['loc']))}: {error['msg']}") from None
        unknown = [i for i in plan.lego_ids if i not in course.by_id]
        if unknown:
            raise InputError(path, f"{quote_id(unknown[0])}: not a canonical LEGO of this course")
        plans.append(plan)
    return plans


def load_plan(course: Course, segment: int) -> SegmentPlan:
    for plan in load_plans(course):
        if plan.segment_number == segment:
            return plan
    raise Phase5Error(f"no plan for segment {segment} in {CourseLayout(course.root).segments_dir}")
