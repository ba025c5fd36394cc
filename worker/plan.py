"""``prepare``: split the canonical order into segments × orchestrators × agents (docs/DESIGN.md §3-§4).

The plan files keep the original's shape so existing tools can read them.

>>> split_evenly(list(range(7)), 3)
[[0, 1, 2], [3, 4], [5, 6]]
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from worker.atomic import Journal, write_json
from worker.course import Course, save_languages
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


class RedoInfo(BaseModel):
    """What marks a segment as part of a redo (``phase5 redo``): a later regeneration of chosen
    baskets, numbered after the course's plan, whose baskets replace theirs in
    ``lego_baskets.json`` once :attr:`applied_at` is set."""

    model_config = ConfigDict(extra="allow")

    number: int  # the redo's number: 1 for the course's first redo
    backend: str
    model: str | None = None  # API backends: the model asked for
    selection: str  # how the baskets were chosen, as people read it ("where empty", "ids")
    created_at: float
    applied_at: float | None = None  # when its baskets were merged into lego_baskets.json


class SegmentPlan(BaseModel):
    model_config = ConfigDict(extra="allow")

    segment_number: int
    total_legos: int
    orchestrator_count: int
    agents_per_orchestrator: int
    orchestrator_batches: list[OrchestratorBatch]
    total_segments: int | None = None
    redo: RedoInfo | None = None  # set on the segments of a redo, never on the course's plan

    @property
    def label(self) -> str:
        """How logs and displays name it: ``segment 2``, ``segment 4 (redo 1)``."""
        return f"segment {self.segment_number}" + (f" (redo {self.redo.number})" if self.redo else "")

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
    rewritten: list[str] = field(default_factory=list)  # plan files restored: "segment_02.json (missing)"


def prepare(
    course: Course,
    segments: int = DEFAULT_SEGMENTS,
    orchestrators: int = DEFAULT_ORCHESTRATORS,
    agents: int = DEFAULT_AGENTS,
    force: bool = False,
) -> PrepareResult:
    """Write the plan files and folders; a no-op when the same plan is already there.

    A plan file that is missing or damaged while the others and every saved basket agree with
    this plan is written again (the plan follows from the course and the shape): nothing saved is
    set aside. A different plan while baskets exist is refused unless ``force``, which moves the
    old ``phase5_segments`` folder aside (renamed, never deleted) before writing the new plan.
    """
    layout = CourseLayout(course.root)
    plans = make_plans(course.ids, segments, orchestrators, agents)
    existing = _existing_plans(layout)
    wanted = {p.segment_number: p.model_dump() for p in plans}
    if existing == wanted:
        return PrepareResult(plans, changed=False)
    moved = None
    if has_outputs(layout):  # even when the plan files were deleted: never overwrite saved work
        disagreement = _disagreement(layout, plans, existing)
        if disagreement is None:
            return PrepareResult(plans, changed=True, rewritten=_rewrite_lost(layout, plans, existing))
        if not force:
            raise Phase5Error(
                f"{layout.segments_dir}: a different plan with saved baskets exists ({disagreement}); rerun with"
                " the same options, or add --force to move the old folder aside and start a new plan"
            )
        moved = _aside_name(layout.segments_dir)
        shutil.move(str(layout.segments_dir), moved)
    save_languages(course)  # beside the plan, where a moved-aside folder took the old record
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


def _existing_plans(layout: CourseLayout) -> dict[int, dict | None]:
    """The course's plan files on disk by segment number: their content, or None when unreadable
    (the segments of redos are left out: they are not the course's shape)."""
    out: dict[int, dict | None] = {}
    for path in layout.plan_files():
        number = int(path.stem.rpartition("_")[2])
        try:
            plan = SegmentPlan.model_validate(read_json_file(path))
        except (InputError, ValidationError):
            out[number] = None
            continue
        if plan.redo is None:
            out[number] = plan.model_dump() if plan.segment_number == number else None
    return out


def _redo_segments(layout: CourseLayout) -> set[int]:
    """The segment numbers of the redos on disk (their plan files say so)."""
    found = set()
    for path in layout.plan_files():
        try:
            plan = SegmentPlan.model_validate(read_json_file(path))
        except (InputError, ValidationError):
            continue
        if plan.redo is not None:
            found.add(plan.segment_number)
    return found


def saved_shape(layout: CourseLayout) -> tuple[int, int, int] | None:
    """The (segments, orchestrators, agents) the readable plan files on disk were made with, or
    None when none can tell."""
    found = [p for p in _existing_plans(layout).values() if p is not None and p.get("total_segments")]
    if not found:
        return None
    return (
        found[0]["total_segments"],
        max(p["orchestrator_count"] for p in found),
        found[0]["agents_per_orchestrator"],
    )


def plans_complete(layout: CourseLayout) -> bool:
    """Every plan file of the shape the files themselves give is there and readable."""
    existing = _existing_plans(layout)
    shape = saved_shape(layout)
    return shape is not None and None not in existing.values() and set(existing) == set(range(1, shape[0] + 1))


def _disagreement(layout: CourseLayout, plans: list[SegmentPlan], existing: dict[int, dict | None]) -> str | None:
    """What on disk does not fit ``plans`` (a readable plan file that differs, a saved basket in
    another agent's, orchestrator's or segment's file than the plan puts it), or None: then the
    files that are missing or unreadable are this plan's, lost."""
    wanted = {p.segment_number: p for p in plans}
    for number, dump in sorted(existing.items()):
        if dump is not None and (number not in wanted or dump != wanted[number].model_dump()):
            return f"{layout.segment_plan(number).name} differs"
    redos = _redo_segments(layout)
    for number in _numbers(layout.segments_dir, "segment_[0-9][0-9]"):
        if number in redos:
            continue  # a redo's segment: its own plan, not the course's
        if number not in wanted:
            return f"{layout.segment_dir(number).name} is not in this plan"
        plan = wanted[number]
        if (problem := _stray_ids(layout.segment_baskets(number), plan.lego_ids)) is not None:
            return problem
        for orch in _numbers(layout.segment_dir(number), "orch_[0-9][0-9]"):
            batch = next((b for b in plan.orchestrator_batches if b.orchestrator_id == orch), None)
            if batch is None:
                return f"{layout.orch_dir(number, orch)} is not in this plan"
            if (problem := _stray_ids(layout.orch_baskets(number, orch), batch.lego_ids)) is not None:
                return problem
            for agent in _numbers(layout.orch_dir(number, orch), "agent_[0-9][0-9]_*"):
                ids = batch.agent_batches[agent - 1] if agent <= len(batch.agent_batches) else []
                for path in (layout.agent_file(number, orch, agent), layout.agent_journal(number, orch, agent)):
                    if (problem := _stray_ids(path, ids)) is not None:
                        return problem
    return None


def _numbers(folder: Path, pattern: str) -> list[int]:
    """The numbers of the entries of ``folder`` named like ``pattern`` (``segment_02``: 2)."""
    if not folder.is_dir():
        return []
    return sorted({int(p.name.split("_")[1][:2]) for p in folder.glob(pattern)})


def _stray_ids(path: Path, ids: Sequence[str]) -> str | None:
    """``path`` names a saved basket that is not among ``ids``: the first such, as a reason."""
    if not path.is_file():
        return None
    allowed = set(ids)
    if path.suffix == ".jsonl":
        found = [str(r.get("id")) for r in Journal(path).records()]
    else:
        try:
            data = read_json_file(path)
        except InputError:
            return None  # unreadable: its worker sets it aside and rebuilds it; it says nothing of the plan
        found = list(data) if isinstance(data, dict) else []
    stray = next((i for i in found if i not in allowed), None)
    return None if stray is None else f"{path.name} holds {quote_id(stray)}, which this plan puts elsewhere"


def _rewrite_lost(layout: CourseLayout, plans: list[SegmentPlan], existing: dict[int, dict | None]) -> list[str]:
    """Write the plan files that are missing or unreadable (an unreadable one is kept aside)."""
    rewritten = []
    for plan in plans:
        number = plan.segment_number
        if number in existing and existing[number] is not None:
            continue
        path = layout.segment_plan(number)
        why = "missing"
        if path.exists():
            aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(path, aside)
            why = f"unreadable; kept as {aside.name}"
        for batch in plan.orchestrator_batches:
            layout.orch_dir(number, batch.orchestrator_id).mkdir(parents=True, exist_ok=True)
        write_json(path, plan.model_dump(exclude_none=True), indent=2)
        rewritten.append(f"{path.name} ({why})")
    return rewritten


def load_plans(course: Course, include_redo: bool = False) -> list[SegmentPlan]:
    """The plan files of a prepared course, checked against the course's canonical ids: the
    course's plan, and with ``include_redo`` the segments of its redos after it."""
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
        if include_redo or plan.redo is None:
            plans.append(plan)
    return plans


def load_plan(course: Course, segment: int) -> SegmentPlan:
    """Segment ``segment``'s plan, a redo's segment or not."""
    for plan in load_plans(course, include_redo=True):
        if plan.segment_number == segment:
            return plan
    raise Phase5Error(f"no plan for segment {segment} in {CourseLayout(course.root).segments_dir}")
