"""Where each basket came from: the journal records of every segment (the course's and its
redos'), for ``phase5 show`` and ``phase5 report``.

An agent journal is the source of truth about a basket: its line is written the moment the basket
is saved, with the backend and model that made it, the requests and repair rounds it took, their
token usage, the phrases dropped and why, and (since journals carry them) when its generation
began and when it was saved, and the redo that made it. The basket in ``lego_baskets.json`` is the
one of the last applied redo that made it, else the course's run's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker.atomic import Journal
from worker.cost import PriceTable, basket_spend
from worker.course import Course
from worker.errors import Phase5Error
from worker.generators.base import Usage
from worker.paths import CourseLayout
from worker.plan import SegmentPlan, load_plans


@dataclass(frozen=True)
class Made:
    """One journal record of a basket, and where it was written."""

    lego_id: str
    segment: int
    orch: int
    agent: int
    redo: int | None  # the redo that made it, None for the course's run
    applied: bool  # part of lego_baskets.json's history: the course's run, or an applied redo
    record: dict[str, Any]

    @property
    def window(self) -> str:
        return f"s{self.segment}-o{self.orch}"

    @property
    def backend(self) -> str:
        return str(self.record.get("backend") or "?")

    @property
    def model(self) -> str:
        return str(self.record.get("model") or "")

    @property
    def made_by(self) -> str:
        """``anthropic claude-sonnet-5`` or ``corpus``."""
        return f"{self.backend} {self.model}".strip()

    @property
    def repair_rounds(self) -> int:
        return _int(self.record.get("repair_rounds"))

    @property
    def requests(self) -> int:
        return _int(self.record.get("requests"))

    @property
    def usage(self) -> Usage:
        usage = self.record.get("usage")
        return Usage.from_json(usage if isinstance(usage, dict) else None)

    @property
    def time(self) -> float | None:
        """When the basket was saved (None for journals written before records carried it)."""
        return _float(self.record.get("time"))

    @property
    def started(self) -> float | None:
        """When its generation began: its first request."""
        return _float(self.record.get("started"))

    @property
    def dropped(self) -> list[tuple[str, str, str]]:
        """The phrases dropped on the way: (target, known, reason)."""
        found = []
        for item in self.record.get("dropped") or []:
            if isinstance(item, dict):
                phrase = item.get("phrase")
                texts = [str(x) for x in phrase] if isinstance(phrase, list) else []
                target, known = (texts + ["", ""])[:2]
                found.append((target, known, str(item.get("reason") or "")))
        return found

    @property
    def notes(self) -> list[str]:
        return [str(note) for note in self.record.get("notes") or []]

    def cost(self, table: PriceTable) -> float:
        """Its dollars, as ``phase5 cost`` prices it (0 for a model the table lacks)."""
        try:
            return basket_spend(self.record, table).cost_usd
        except Phase5Error:  # a model the table lacks: `phase5 cost` says so; here it is unpriced
            return 0.0


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass
class Provenance:
    """Every journal record of a course, by LEGO id, in the order they were made."""

    history: dict[str, list[Made]]
    plans: list[SegmentPlan]

    def current(self, lego_id: str) -> Made | None:
        """The record of the basket ``lego_baskets.json`` holds: the last applied one."""
        applied = [made for made in self.history.get(lego_id, []) if made.applied]
        return applied[-1] if applied else None

    def records(self) -> list[Made]:
        return [made for items in self.history.values() for made in items]


def provenance(course: Course, plans: list[SegmentPlan] | None = None) -> Provenance:
    """Read every agent journal of ``plans`` (default: the course's and its redos'). Within a
    journal the first record of an id counts, as a resuming agent reads it."""
    layout = CourseLayout(course.root)
    plans = plans if plans is not None else load_plans(course, include_redo=True)
    history: dict[str, list[Made]] = {}
    for plan in plans:
        redo = plan.redo.number if plan.redo is not None else None
        applied = plan.redo is None or plan.redo.applied_at is not None
        for batch in plan.orchestrator_batches:
            for number, ids in enumerate(batch.agent_batches, start=1):
                wanted, seen = set(ids), set()
                path = layout.agent_journal(plan.segment_number, batch.orchestrator_id, number)
                for record in Journal(path).records():
                    lego_id = record.get("id")
                    if not isinstance(lego_id, str) or lego_id not in wanted or lego_id in seen:
                        continue
                    seen.add(lego_id)
                    made = Made(lego_id, plan.segment_number, batch.orchestrator_id, number, redo, applied, record)
                    history.setdefault(lego_id, []).append(made)
    return Provenance(history, plans)
