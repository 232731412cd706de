"""Spend reports from the ledger: what each run, iteration, stage, role and model cost, and how much the cache saved.

The ledger is the one source of every dollar figure llamaduo shows; nothing else keeps a copy.
"""

from __future__ import annotations

from typing import Any, Literal

from llamaduo.service.cache import ServiceStore

GroupBy = Literal["stage", "role", "model", "run", "iteration"]
GROUPS: tuple[str, ...] = ("stage", "role", "model", "run", "iteration")
_COLUMNS = {"stage": "stage", "role": "role", "model": "provider || '/' || model", "run": "run_id", "iteration": "iteration"}


def spend(store: ServiceStore, *, run: str | None = None, by: GroupBy = "stage") -> list[dict[str, Any]]:
    """One row per group: requests sent, cache hits, tokens, dollars, and paid requests without a price.

    Batch jobs count their items. Grouped by iteration, rows outside any loop iteration come under None.
    """
    if by not in _COLUMNS:
        raise ValueError(f"cannot group spend by {by!r}; use one of {', '.join(_COLUMNS)}")
    where, args = ("WHERE run_id = ?", (run,)) if run else ("", ())
    column = _COLUMNS[by] if by == "iteration" else f"COALESCE({_COLUMNS[by]}, '-')"
    order = "grp IS NULL, grp" if by == "iteration" else "SUM(cost_usd) DESC, grp"
    rows = store.conn.execute(
        f"SELECT {column} AS grp,"  # noqa: S608 - the column comes from a fixed table, not input
        " SUM(CASE WHEN cache_hit = 0 THEN requests ELSE 0 END), SUM(CASE WHEN cache_hit = 1 THEN requests ELSE 0 END),"
        " SUM(input_tokens), SUM(cached_input_tokens), SUM(output_tokens), SUM(cost_usd),"
        " SUM(CASE WHEN priced = 0 THEN requests ELSE 0 END)"
        f" FROM ledger {where} GROUP BY grp ORDER BY {order}",
        args,
    ).fetchall()
    return [
        {by: g, "requests": r or 0, "cache_hits": h or 0, "input_tokens": i or 0, "cached_input_tokens": c or 0, "output_tokens": o or 0,
         "cost_usd": d or 0.0, "unpriced_requests": u or 0}
        for g, r, h, i, c, o, d, u in rows
    ]


def runs_with_spend(store: ServiceStore) -> list[str]:
    return [r[0] for r in store.conn.execute("SELECT DISTINCT run_id FROM ledger WHERE run_id IS NOT NULL ORDER BY run_id")]
