"""The budget guard (``--max-cost USD``): no new request once the run's recorded spend reaches it.

The run's spend is this process's own (every basket in its journals, priced as the cost report
prices it) plus what the other orchestrators' progress files report (``cost_usd``), re-read at
most once a second. Checked before each new request (a basket of the ``anthropic`` backend, a
batch of ``anthropic-batch``): a request already in flight finishes and is saved, so the spend
can pass the limit by what was in flight; nothing is lost and a later run resumes.

>>> budget = Budget(1.0, own=lambda: 0.25)
>>> budget.allows(), budget.reached
(True, False)
>>> budget = Budget(1.0, own=lambda: 1.5)
>>> budget.allows(), budget.message()
(False, 'budget reached: $1.5000 of $1.0000')
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from worker.cost import PriceTable, basket_spend
from worker.errors import Phase5Error
from worker.generators import API_BACKENDS

REFRESH_SECONDS = 1.0


def usd(amount: float) -> str:
    """Dollars with enough digits for test-sized and course-sized amounts."""
    return f"${amount:,.2f}" if amount >= 100 else f"${amount:.4f}"


class Budget:
    """``max_cost`` (None: no limit) against ``own()`` plus the other orchestrators' reported
    spend. Thread-safe: agents ask it concurrently."""

    def __init__(
        self, max_cost: float | None, own: Callable[[], float], others: Callable[[], float] | None = None
    ) -> None:
        self.max_cost = max_cost
        self.own = own
        self._others = others
        self._others_value = 0.0
        self._others_at = float("-inf")
        self._lock = threading.Lock()
        self.reached = False
        self.spent_at_stop: float | None = None
        self.halted: str | None = None  # why the API refuses to spend more (a spend limit), if it does

    def others(self) -> float:
        if self._others is None:
            return 0.0
        with self._lock:
            if time.monotonic() - self._others_at >= REFRESH_SECONDS:
                self._others_value = self._others()
                self._others_at = time.monotonic()
            return self._others_value

    def spent(self) -> float:
        return self.own() + self.others()

    def halt(self, reason: str) -> None:
        """The API answered that a spend limit is reached: no new request, as if ``max_cost`` were
        reached, and ``reason`` is the message."""
        with self._lock:
            self.halted = self.halted or reason
            self.reached = True

    def allows(self) -> bool:
        """May a new request start? Once it says no, it keeps saying no."""
        if self.reached:
            return False
        if self.max_cost is None:
            return True
        spent = self.spent()
        if spent >= self.max_cost:
            self.reached, self.spent_at_stop = True, spent
            return False
        return True

    def message(self) -> str:
        if self.halted is not None:
            return f"budget reached: {self.halted}"
        spent = self.spent_at_stop if self.spent_at_stop is not None else self.spent()
        return f"budget reached: {usd(spent)} of {usd(self.max_cost or 0.0)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "max_cost_usd": self.max_cost,
            "spent_usd": round(self.spent(), 6),
            "reached": self.reached,
            **({"halted": self.halted} if self.halted else {}),
        }


def make_pricer(table: PriceTable) -> Callable[[dict[str, Any]], float]:
    """A journal record's cost; a model missing from the table counts as free (the cost report
    says so), except under a budget, where :func:`check_priced` refuses to start."""

    def price(record: dict[str, Any]) -> float:
        try:
            return basket_spend(record, table).cost_usd
        except Phase5Error:
            return 0.0

    return price


def check_priced(table: PriceTable, model: str, max_cost: float | None, backend: str) -> None:
    """Under a budget, an API backend's model must have a price: one line and exit 2 otherwise."""
    if max_cost is not None and backend in API_BACKENDS:
        table.price(model)
