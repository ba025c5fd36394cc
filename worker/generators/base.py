"""The one generator interface (docs/DESIGN.md §5).

A generator writes candidate e-phrases for a LEGO; :func:`worker.rules.build_basket` (shared
code) tiles them, drops failures and computes the d-phrases. So a basket leaves a generator only
after validation, whatever the backend.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from worker.course import LegoContext
from worker.models import Basket
from worker.rules import Rejection


@dataclass
class Usage:
    """Token usage as the Messages API reports it. ``cache_creation_1h_input_tokens`` is the part
    of ``cache_creation_input_tokens`` written with the 1-hour TTL (priced apart), not more tokens."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_1h_input_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values(), strict=True)))

    def __sub__(self, other: Usage) -> Usage:
        return Usage(*(a - b for a, b in zip(asdict(self).values(), asdict(other).values(), strict=True)))

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Usage:
        data = data or {}
        return cls(**{k: int(data.get(k) or 0) for k in cls.__dataclass_fields__})

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens


@dataclass
class GeneratedBasket:
    """A validated basket with what it cost and what was dropped on the way."""

    lego_id: str
    basket: Basket
    usage: Usage = field(default_factory=Usage)
    #: The part of ``usage`` sent through the Messages API by a batched backend (its warm-up
    #: request): priced at the Messages price, the rest at the batch price.
    interactive_usage: Usage | None = None
    requests: int = 0
    repair_rounds: int = 0
    #: e-phrases the basket would hold from its first answer alone (None: no request made it)
    first_answer_e: int | None = None
    rejected: list[Rejection] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. "429 retried", "prose answer"
    backend: str = ""
    model: str = ""  # the model that wrote it, for the cost report (empty for offline backends)
    #: d-phrase windows left out for want of a known side, and those whose known side the model
    #: pointed out in its own translation (worker.rules.d_phrases)
    d_left_out: int = 0
    d_filled: int = 0
    started_at: float | None = None  # when its generation began (its first request), for the timeline

    def journal_record(self, redo: int | None = None) -> dict[str, Any]:
        """One line of an agent journal, stamped with the time it is written (and the redo that
        made it, for a basket of ``phase5 redo``)."""
        return {
            "id": self.lego_id,
            "backend": self.backend,
            "model": self.model,
            "basket": self.basket.to_json(),
            "usage": self.usage.to_json(),
            **({"interactive_usage": self.interactive_usage.to_json()} if self.interactive_usage else {}),
            "requests": self.requests,
            "repair_rounds": self.repair_rounds,
            **({"first_answer_e": self.first_answer_e} if self.first_answer_e is not None else {}),
            "dropped": [{"phrase": list(r.pair), "reason": r.reason} for r in self.rejected],
            "notes": self.notes,
            "d_left_out": self.d_left_out,
            **({"d_filled": self.d_filled} if self.d_filled else {}),
            "started": self.started_at,
            "time": round(time.time(), 3),
            **({"redo": redo} if redo is not None else {}),
        }


class GenerationError(Exception):
    """A basket could not be generated this time (API down, out of retries, ...): the agent
    counts it as a failed attempt and retries later; nothing is saved for that LEGO."""


class Cancelled(GenerationError):
    """The worker is stopping: the request was not sent (or its answer not waited for); the
    basket stays unsaved and no attempt counts as failed."""


class SpendLimitReached(GenerationError):
    """The API refuses every request until a spend limit is raised (the tier's monthly cap: 429
    ``enforced_spend_limit_reached`` with no ``retry-after``; or a limit the organisation set: 400
    "You have reached your specified API usage limits"). Never retried: the worker stops starting
    requests, keeps what is saved and exits 4, like ``--max-cost``; a later run resumes."""


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
