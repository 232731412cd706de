"""The spend cap: reserve each request's worst-case cost before sending it, release it once the real cost is in the ledger.

Spend is read from the project's ledger (new rows only, by id) before every reservation, so processes sharing a
project database see each other's finished requests as they happen. What another process has in flight but not
yet recorded is invisible here: the cap can be crossed by at most that process's in-flight worst case.
"""

from __future__ import annotations

import threading

from llamaduo.errors import BudgetExceeded
from llamaduo.service.cache import ServiceStore

_BUDGETS: dict[str, Budget] = {}
_LOCK = threading.Lock()


class Budget:
    """Spent (every process's, from the ledger) plus this process's in-flight reservations never exceed the cap."""

    def __init__(self, limit_usd: float):
        self.limit = limit_usd
        self.spent = 0.0
        self.reserved = 0.0
        self._last_row = 0

    def refresh(self, store: ServiceStore) -> None:
        added, self._last_row = store.ledger_cost_since(self._last_row)
        self.spent += added

    def reserve(self, estimate_usd: float, what: str, store: ServiceStore) -> float:
        self.refresh(store)
        if self.spent + self.reserved + estimate_usd > self.limit:
            raise BudgetExceeded(
                f"stopped before {what}: it may cost up to ${estimate_usd:.4f} and ${self.spent:.4f} of the "
                f"${self.limit:.2f} budget is already spent (plus ${self.reserved:.4f} in flight)",
                "Raise service.budget_usd (or --set service.budget_usd=...) and rerun; finished replies are cached and cost nothing.",
            )
        self.reserved += estimate_usd
        return estimate_usd

    def release(self, reserved_usd: float) -> None:
        """Call once the request failed, or once its cost is written to the ledger (which `refresh` then reads)."""
        self.reserved = max(0.0, self.reserved - reserved_usd)


def budget_for(store: ServiceStore, limit_usd: float | None) -> Budget | None:
    """One Budget per project database in this process, shared by the generator and every judge."""
    if limit_usd is None:
        return None
    key = str(store.path.resolve())
    with _LOCK:
        budget = _BUDGETS.get(key)
        if budget is None:
            budget = _BUDGETS[key] = Budget(limit_usd)
        budget.limit = limit_usd
        return budget


def forget_budgets() -> None:
    """Drop the in-process spend totals (after `llamaduo cache clear`, or between tests)."""
    with _LOCK:
        _BUDGETS.clear()
