"""What a run spent: token usage from the agents' journals, priced from a table the user can
override (``worker/data/prices.json``, then ``--prices FILE`` or ``$PHASE5_PRICES``).

>>> table = PriceTable.load()
>>> round(table.cost(Usage(input_tokens=1_000_000), "claude-sonnet-5"), 2)
2.0
>>> round(table.cost(Usage(input_tokens=1_000_000), "claude-sonnet-5", batch=True), 2)
1.0
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from worker.atomic import Journal
from worker.constants import E_PHRASES_MIN
from worker.course import Course
from worker.errors import InputError, Phase5Error
from worker.generators.base import Usage
from worker.models import read_json_file
from worker.paths import CourseLayout
from worker.plan import SegmentPlan

PRICES_ENV = "PHASE5_PRICES"


@dataclass(frozen=True)
class Price:
    """USD per million tokens; ``cache_write`` is the 5-minute write, ``cache_write_1h`` the
    1-hour one."""

    input: float
    output: float
    cache_write: float
    cache_read: float
    cache_write_1h: float


@dataclass
class PriceTable:
    models: dict[str, Price]
    batch_discount: float = 0.5
    source: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, override: str | os.PathLike[str] | None = None) -> PriceTable:
        """The shipped table, then the override file (its models replace or add to the shipped ones)."""
        default = json.loads(resources.files("worker").joinpath("data/prices.json").read_text(encoding="utf-8"))
        table = cls._parse(default, "built-in prices")
        override = override or os.environ.get(PRICES_ENV)
        if override:
            data = read_json_file(Path(override))
            extra = cls._parse(data, str(override))
            table.models.update(extra.models)
            if "batch_discount" in data:
                table.batch_discount = extra.batch_discount
            table.source.append(str(override))
        return table

    @classmethod
    def _parse(cls, data: Any, where: str) -> PriceTable:
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            raise InputError(where, 'expected {"models": {model: {input, output, cache_write, cache_read}}}')
        models = {}
        for name, price in data["models"].items():
            try:
                values = {k: float(price[k]) for k in ("input", "output", "cache_write", "cache_read")}
                values["cache_write_1h"] = float(price.get("cache_write_1h", 2 * values["input"]))
                models[name] = Price(**values)
            except (KeyError, TypeError, ValueError, AttributeError):
                raise InputError(where, f"{name}: needs numbers input, output, cache_write, cache_read") from None
        return cls(models=models, batch_discount=float(data.get("batch_discount", 0.5)), source=[where])

    def price(self, model: str) -> Price:
        try:
            return self.models[model]
        except KeyError:
            raise Phase5Error(
                f"no price for model {model!r}; add it to a prices file (--prices FILE or ${PRICES_ENV})"
            ) from None

    def cost(self, usage: Usage, model: str, batch: bool = False) -> float:
        if not usage.total:
            return 0.0
        p = self.price(model)
        one_hour = min(usage.cache_creation_1h_input_tokens, usage.cache_creation_input_tokens)
        dollars = (
            usage.input_tokens * p.input
            + usage.output_tokens * p.output
            + (usage.cache_creation_input_tokens - one_hour) * p.cache_write
            + one_hour * p.cache_write_1h
            + usage.cache_read_input_tokens * p.cache_read
        ) / 1_000_000
        return dollars * (self.batch_discount if batch else 1.0)


@dataclass
class Spend:
    """Usage and cost of one level of the tree (run, segment, orchestrator, agent, basket)."""

    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    baskets: int = 0
    requests: int = 0

    def add(self, other: Spend) -> None:
        self.usage = self.usage + other.usage
        self.cost_usd += other.cost_usd
        self.baskets += other.baskets
        self.requests += other.requests

    def to_json(self) -> dict[str, Any]:
        return {
            "tokens": self.usage.to_json(),
            "cost_usd": round(self.cost_usd, 6),
            "baskets": self.baskets,
            "requests": self.requests,
        }


@dataclass
class RepairGain:
    """What the repair rounds bought: baskets with at least 3 e-phrases from the first answers
    alone against after the repairs (API baskets with a request only). With the fake API's
    ``--replay``, the first answers are a real model's earlier output."""

    baskets: int = 0
    repaired: int = 0
    full_first: int = 0
    full_final: int = 0

    def add(self, record: dict[str, Any]) -> None:
        first = record.get("first_answer_e")
        if first is None:
            return
        self.baskets += 1
        self.repaired += bool(record.get("repair_rounds"))
        self.full_first += int(first) >= E_PHRASES_MIN
        basket = record.get("basket") or {}
        self.full_final += len(basket.get("e") or []) >= E_PHRASES_MIN

    def to_json(self) -> dict[str, int]:
        return asdict(self)


def basket_spend(record: dict[str, Any], table: PriceTable) -> Spend:
    """A journal record's usage and cost. A batched basket's warm-up request went through the
    Messages API (``interactive_usage``): that part at the Messages price, the rest at the batch's."""
    usage = Usage.from_json(record.get("usage"))
    model = record.get("model") or ""
    cost = 0.0
    if model and usage.total:
        if record.get("backend") == "anthropic-batch":
            interactive = Usage.from_json(record.get("interactive_usage"))
            cost = table.cost(interactive, model) + table.cost(usage - interactive, model, batch=True)
        else:
            cost = table.cost(usage, model)
    return Spend(usage=usage, cost_usd=cost, baskets=1, requests=int(record.get("requests") or 0))


def course_spend(
    course: Course, plans: list[SegmentPlan], table: PriceTable, per_basket: bool = False
) -> dict[str, Any]:
    """The cost tree of a course's run, read from the agents' journals (the source of truth: a
    basket's line is written the moment it is saved, with the usage of every request it took)."""
    layout = CourseLayout(course.root)
    run = Spend()
    repairs = RepairGain()
    segments = []
    for plan in plans:
        seg = Spend()
        orchs = []
        for batch in plan.orchestrator_batches:
            orch = Spend()
            agents = []
            for number, ids in enumerate(batch.agent_batches, start=1):
                agent = Spend()
                baskets = {}
                wanted = set(ids)
                seen: set[str] = set()
                for record in Journal(
                    layout.agent_journal(plan.segment_number, batch.orchestrator_id, number)
                ).records():
                    lego_id = record.get("id")
                    if lego_id not in wanted or lego_id in seen:
                        continue
                    seen.add(lego_id)
                    repairs.add(record)
                    spend = basket_spend(record, table)
                    agent.add(spend)
                    if per_basket:
                        baskets[lego_id] = spend.to_json()
                orch.add(agent)
                entry = {"agent": number, **agent.to_json()}
                if per_basket:
                    entry["per_basket"] = baskets
                agents.append(entry)
            seg.add(orch)
            orchs.append({"orch": batch.orchestrator_id, **orch.to_json(), "agents": agents})
        run.add(seg)
        redo = plan.redo.number if plan.redo is not None else None
        segments.append({"segment": plan.segment_number, "redo": redo, **seg.to_json(), "orchestrators": orchs})
    return {"run": run.to_json(), "segments": segments, "repairs": repairs.to_json(), "prices": table.source}
