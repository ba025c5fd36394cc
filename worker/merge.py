"""Merges: agent files into an orchestrator file, orchestrator files into a segment file, and
segment files into ``lego_baskets.json``. They never generate anything, and a missing input is an
error before anything is written (never a partial file)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.checksum import checksum_problem, move_aside, write_basket_file
from worker.course import Course
from worker.errors import Phase5Error
from worker.paths import CourseLayout
from worker.plan import load_plan, load_plans
from worker.report import load_basket_file


@dataclass
class MergeResult:
    output: Path
    count: int
    expected: int
    duplicates: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    moved_aside: str | None = None  # the previous output, when it did not match its checksum
    redone: int = 0  # baskets taken from applied redos instead of the course's segments

    @property
    def coverage(self) -> float:
        return (self.expected - len(self.missing)) / self.expected if self.expected else 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "count": self.count,
            "expected": self.expected,
            "coverage": round(self.coverage, 6),
            "duplicates": self.duplicates,
            "missing": self.missing,
            "extra": self.extra,
            "inputs": self.inputs,
            "moved_aside": self.moved_aside,
            "redone": self.redone,
        }

    def summary(self) -> str:
        return (
            f"{self.output.name}: {self.count} baskets from {len(self.inputs)} files; expected {self.expected},"
            f" missing {len(self.missing)}, extra {len(self.extra)}, duplicate ids {len(self.duplicates)},"
            f" coverage {100 * self.coverage:.1f}%"
            + (f"; {self.redone} baskets from redos" if self.redone else "")
            + (
                f"; the previous {self.output.name} did not match its checksum: moved aside to {self.moved_aside}"
                if self.moved_aside
                else ""
            )
        )


def merge_files(
    inputs: Sequence[Path], expected_ids: Sequence[str], output: Path, overrides: Sequence[Path] = ()
) -> MergeResult:
    """Merge basket maps in ``expected_ids`` order; refuse (write nothing) if an input is missing
    or an expected id is absent. Ids seen in two inputs are reported; the first one is kept. The
    baskets of ``overrides`` (applied redos, in order) then replace theirs."""
    absent = [path for path in inputs if not path.exists()]
    if absent:
        raise Phase5Error(f"{absent[0]}: missing; cannot merge {output.name} (nothing written)")
    merged: dict[str, Any] = {}
    duplicates: list[str] = []
    for path in inputs:
        baskets, repeated = load_basket_file(path)
        duplicates.extend(repeated)
        for lego_id, basket in baskets.items():
            if lego_id in merged:
                duplicates.append(lego_id)
            else:
                merged[lego_id] = basket
    wanted = set(expected_ids)
    result = MergeResult(
        output=output,
        count=len(merged),
        expected=len(expected_ids),
        duplicates=sorted(set(duplicates)),
        missing=[i for i in expected_ids if i not in merged],
        extra=sorted(i for i in merged if i not in wanted),
        inputs=[str(p) for p in inputs],
    )
    if result.missing:
        raise Phase5Error(
            f"{output.name}: {len(result.missing)} expected baskets are missing from the inputs"
            f" (first {result.missing[0]}); nothing written"
        )
    redone: set[str] = set()
    for path in overrides:
        for lego_id, basket in load_basket_file(path)[0].items():
            if lego_id in wanted:
                merged[lego_id] = basket
                redone.add(lego_id)
        result.inputs.append(str(path))
    result.redone = len(redone)
    ordered = {i: merged[i] for i in expected_ids}
    ordered.update({i: merged[i] for i in result.extra})
    if output.exists() and checksum_problem(output):
        result.moved_aside = move_aside(output).name  # kept for a person to look at, never deleted
    write_basket_file(output, ordered)
    return result


def merge_orchestrator(course: Course, segment: int, orch: int) -> MergeResult:
    layout = CourseLayout(course.root)
    batch = load_plan(course, segment).orchestrator(orch)
    inputs = [layout.agent_file(segment, orch, a) for a in range(1, len(batch.agent_batches) + 1)]
    return merge_files(inputs, batch.lego_ids, layout.orch_baskets(segment, orch))


def merge_segment(course: Course, segment: int) -> MergeResult:
    layout = CourseLayout(course.root)
    plan = load_plan(course, segment)
    inputs = [layout.orch_baskets(segment, b.orchestrator_id) for b in plan.orchestrator_batches]
    return merge_files(inputs, plan.lego_ids, layout.segment_baskets(segment))


def merge_final(course: Course) -> MergeResult:
    """``lego_baskets.json`` from the course's segment files, with the baskets of every applied
    redo in place of theirs (so a later run rebuilds the file as the redos left it)."""
    layout = CourseLayout(course.root)
    plans = load_plans(course, include_redo=True)
    inputs = [layout.segment_baskets(p.segment_number) for p in plans if p.redo is None]
    redone = [layout.segment_baskets(p.segment_number) for p in plans if p.redo and p.redo.applied_at]
    return merge_files(inputs, course.ids, layout.final_baskets, redone)
