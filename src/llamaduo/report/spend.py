"""Spend and tokens from the service ledger, grouped by stage, role and model (read-only: reports never write it)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pydantic import BaseModel

from llamaduo.errors import LlamaduoError


class SpendRow(BaseModel):
    stage: str
    role: str
    model: str
    requests: int
    cache_hits: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    cost_usd: float


def spend_by_stage(db_path: Path, run_id: str | None = None) -> list[SpendRow]:
    """One row per (stage, role, model) of `run_id` (None: every run); empty when the ledger does not exist yet."""
    if not Path(db_path).is_file():
        return []
    where, args = ("WHERE run_id = ?", (run_id,)) if run_id else ("", ())
    query = (
        "SELECT COALESCE(stage, ''), COALESCE(role, ''), COALESCE(model, ''), COALESCE(SUM(requests), 0), COALESCE(SUM(cache_hit), 0),"
        " COALESCE(SUM(input_tokens), 0), COALESCE(SUM(cached_input_tokens), 0), COALESCE(SUM(output_tokens), 0),"
        f" COALESCE(SUM(cost_usd), 0) FROM ledger {where} GROUP BY 1, 2, 3 ORDER BY 9 DESC, 1, 2, 3"
    )
    try:
        # mode=ro: a report must never create or migrate the service database.
        conn = sqlite3.connect(f"file:{Path(db_path).resolve()}?mode=ro", uri=True, timeout=10)
        try:
            rows = conn.execute(query, args).fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if "no such table" in str(exc):
            return []
        raise LlamaduoError(f"cannot read the service ledger {db_path} ({exc})", "Check the file is the project's service database") from None
    fields = list(SpendRow.model_fields)
    return [SpendRow(**dict(zip(fields, row, strict=True))) for row in rows]


def total_usd(rows: list[SpendRow]) -> float:
    return sum(r.cost_usd for r in rows)
