"""Spend reports from the ledger: what each run, stage, role and model cost, and how much the cache saved."""

from __future__ import annotations

from typing import Any, Literal

from llamaduo.service.cache import ServiceStore

GroupBy = Literal["stage", "role", "model", "run"]
_COLUMNS = {"stage": "stage", "role": "role", "model": "provider || '/' || model", "run": "run_id"}


def spend(store: ServiceStore, *, run: str | None = None, by: GroupBy = "stage") -> list[dict[str, Any]]:
    """One row per group: requests sent, cache hits, tokens and dollars (batch jobs count their items)."""
    if by not in _COLUMNS:
        raise ValueError(f"cannot group spend by {by!r}; use one of {', '.join(_COLUMNS)}")
    where, args = ("WHERE run_id = ?", (run,)) if run else ("", ())
    rows = store.conn.execute(
        f"SELECT COALESCE({_COLUMNS[by]}, '-') AS grp,"  # noqa: S608 - the column comes from a fixed table, not input
        " SUM(CASE WHEN cache_hit = 0 THEN requests ELSE 0 END), SUM(CASE WHEN cache_hit = 1 THEN requests ELSE 0 END),"
        " SUM(input_tokens), SUM(cached_input_tokens), SUM(output_tokens), SUM(cost_usd)"
        f" FROM ledger {where} GROUP BY grp ORDER BY SUM(cost_usd) DESC, grp",
        args,
    ).fetchall()
    return [
        {by: g, "requests": r or 0, "cache_hits": h or 0, "input_tokens": i or 0, "cached_input_tokens": c or 0, "output_tokens": o or 0, "cost_usd": round(d or 0.0, 6)}
        for g, r, h, i, c, o, d in rows
    ]


def runs_with_spend(store: ServiceStore) -> list[str]:
    return [r[0] for r in store.conn.execute("SELECT DISTINCT run_id FROM ledger WHERE run_id IS NOT NULL ORDER BY run_id")]
