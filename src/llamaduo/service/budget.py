"""The spend cap: reserve each request's worst-case cost before sending it, settle with the real cost after."""

from __future__ import annotations

import threading

from llamaduo.errors import BudgetExceeded
from llamaduo.service.cache import ServiceStore

_BUDGETS: dict[str, Budget] = {}
_LOCK = threading.Lock()


class Budget:
    """Spent (from the ledger at first use, then kept up to date) plus in-flight reservations never exceed the cap."""

    def __init__(self, limit_usd: float, spent_usd: float):
        self.limit = limit_usd
        self.spent = spent_usd
        self.reserved = 0.0

    def reserve(self, estimate_usd: float, what: str) -> float:
        if self.spent + self.reserved + estimate_usd > self.limit:
            raise BudgetExceeded(
                f"stopped before {what}: it may cost up to ${estimate_usd:.4f} and ${self.spent:.4f} of the "
                f"${self.limit:.2f} budget is already spent (plus ${self.reserved:.4f} in flight)",
                "Raise service.budget_usd (or --set service.budget_usd=...) and rerun; finished replies are cached and cost nothing.",
            )
        self.reserved += estimate_usd
        return estimate_usd

    def settle(self, reserved_usd: float, actual_usd: float) -> None:
        self.reserved = max(0.0, self.reserved - reserved_usd)
        self.spent += actual_usd


def budget_for(store: ServiceStore, limit_usd: float | None) -> Budget | None:
    """One Budget per project database in this process, shared by the generator and every judge."""
    if limit_usd is None:
        return None
    key = str(store.path.resolve())
    with _LOCK:
        budget = _BUDGETS.get(key)
        if budget is None:
            budget = _BUDGETS[key] = Budget(limit_usd, store.total_cost())
        budget.limit = limit_usd
        return budget


def forget_budgets() -> None:
    """Drop the in-process spend totals (after `llamaduo cache clear`, or between tests)."""
    with _LOCK:
        _BUDGETS.clear()
