"""The one generator interface (SPEC §5).

A generator writes candidate e-phrases for a LEGO; :func:`worker.rules.build_basket` (shared
code) tiles them, drops failures and computes the d-phrases. So a basket leaves a generator only
after validation, whatever the backend.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from worker.course import LegoContext
from worker.models import Basket
from worker.rules import Rejection


@dataclass
class Usage:
    """Token usage as the Messages API reports it."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values(), strict=True)))

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Usage:
        data = data or {}
        return cls(**{k: int(data.get(k) or 0) for k in cls.__dataclass_fields__})

    @property
    def total(self) -> int:
        return sum(asdict(self).values())


@dataclass
class GeneratedBasket:
    """A validated basket with what it cost and what was dropped on the way."""

    lego_id: str
    basket: Basket
    usage: Usage = field(default_factory=Usage)
    requests: int = 0
    repair_rounds: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. "429 retried", "prose answer"
    backend: str = ""
    model: str = ""  # the model that wrote it, for the cost report (empty for offline backends)

    def journal_record(self) -> dict[str, Any]:
        """One line of an agent journal."""
        return {
            "id": self.lego_id,
            "backend": self.backend,
            "model": self.model,
            "basket": self.basket.to_json(),
            "usage": self.usage.to_json(),
            "requests": self.requests,
            "repair_rounds": self.repair_rounds,
            "dropped": [{"phrase": list(r.pair), "reason": r.reason} for r in self.rejected],
            "notes": self.notes,
        }


class GenerationError(Exception):
    """A basket could not be generated this time (API down, out of retries, ...): the agent
    counts it as a failed attempt and retries later; nothing is saved for that LEGO."""


class Generator(Protocol):
    """Backends implement this. ``generate`` may be called from several threads at once."""

    name: str

    def generate(self, ctx: LegoContext, prefix_upto: int | None = None) -> GeneratedBasket:
        """Return a validated basket for ``ctx.lego`` or raise :class:`GenerationError`.

        ``prefix_upto`` is the position of the first LEGO of the calling agent's batch: API
        backends put the vocabulary of positions ``1..prefix_upto-1`` in a cached prompt prefix
        that stays byte-identical across that agent's requests. ``None`` means ``ctx.position``.
        """
        ...

    def close(self) -> None:
        """Release clients and connections."""
        ...
