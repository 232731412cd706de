"""Spend and tokens from the service ledger, by iteration, stage, role and model (read-only: reports never write it).

The ledger is the one source of every dollar figure a report, the runs registry, MLflow or a model card shows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel

from llamaduo.errors import LlamaduoError


class SpendRow(BaseModel):
    iteration: int | None = None
    """The loop iteration the spend went into (synthesis for its training data, its evaluation); None outside the loop."""
    stage: str
    role: str
    model: str
    requests: int
    cache_hits: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    cost_usd: float
    unpriced_requests: int = 0
    """Paid requests to a model without a known price: spend that the dollars above leave out."""


@contextmanager
def _ledger(db_path: Path) -> Iterator[tuple[sqlite3.Connection, set[str]] | None]:
    """A read-only connection and the ledger's columns, or None when there is no ledger yet."""
    if not Path(db_path).is_file():
        yield None
        return
    try:
        # mode=ro: a report must never create or migrate the service database.
        conn = sqlite3.connect(f"file:{Path(db_path).resolve()}?mode=ro", uri=True, timeout=10)
    except sqlite3.DatabaseError as exc:
        raise _unreadable(db_path, exc) from None
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(ledger)")}
        yield (conn, columns) if columns else None
    except sqlite3.DatabaseError as exc:
        raise _unreadable(db_path, exc) from None
    finally:
        conn.close()


def _unreadable(db_path: Path, exc: Exception) -> LlamaduoError:
    return LlamaduoError(f"cannot read the service ledger {db_path} ({exc})", "Check the file is the project's service database")


def spend_by_stage(db_path: Path, run_id: str | None = None) -> list[SpendRow]:
    """One row per (iteration, stage, role, model) of `run_id` (None: every run); empty when there is no ledger yet."""
    with _ledger(db_path) as found:
        if found is None:
            return []
        conn, columns = found
        # A ledger written before iterations and prices were recorded reads as outside the loop and priced.
        iteration = "iteration" if "iteration" in columns else "NULL"
        unpriced = "SUM(CASE WHEN priced = 0 THEN requests ELSE 0 END)" if "priced" in columns else "0"
        where, args = ("WHERE run_id = ?", (run_id,)) if run_id else ("", ())
        rows = conn.execute(
            f"SELECT {iteration}, COALESCE(stage, ''), COALESCE(role, ''), COALESCE(model, ''),"  # noqa: S608 - fixed column names
            " COALESCE(SUM(CASE WHEN cache_hit = 0 THEN requests ELSE 0 END), 0), COALESCE(SUM(CASE WHEN cache_hit = 1 THEN requests ELSE 0 END), 0),"
            " COALESCE(SUM(input_tokens), 0), COALESCE(SUM(cached_input_tokens), 0), COALESCE(SUM(output_tokens), 0),"
            f" COALESCE(SUM(cost_usd), 0), COALESCE({unpriced}, 0) FROM ledger {where} GROUP BY 1, 2, 3, 4 ORDER BY 1, 10 DESC, 2, 3, 4",
            args,
        ).fetchall()
    fields = list(SpendRow.model_fields)
    return [SpendRow(**dict(zip(fields, row, strict=True))) for row in rows]


def spend_by_run(db_path: Path) -> dict[str, tuple[float, int]]:
    """run id -> (dollars, unpriced paid requests), for every run with ledger rows."""
    with _ledger(db_path) as found:
        if found is None:
            return {}
        conn, columns = found
        unpriced = "SUM(CASE WHEN priced = 0 THEN requests ELSE 0 END)" if "priced" in columns else "0"
        rows = conn.execute(f"SELECT run_id, COALESCE(SUM(cost_usd), 0), COALESCE({unpriced}, 0) FROM ledger"  # noqa: S608
                            " WHERE run_id IS NOT NULL GROUP BY run_id").fetchall()
    return {run: (float(usd), int(n)) for run, usd, n in rows}


def total_usd(rows: list[SpendRow]) -> float:
    return sum(r.cost_usd for r in rows)


def by_iteration(rows: list[SpendRow]) -> dict[int | None, float]:
    """Dollars per loop iteration (None: spend of the run outside any iteration)."""
    out: dict[int | None, float] = {}
    for r in rows:
        out[r.iteration] = out.get(r.iteration, 0.0) + r.cost_usd
    return out


def unpriced(rows: list[SpendRow]) -> int:
    return sum(r.unpriced_requests for r in rows)


def usd(value: float, unpriced_requests: int = 0) -> str:
    """A dollar figure as every view prints it: 4 decimals, and a mark when unpriced calls are left out of it."""
    return f"{value:.4f}" + (f" + {unpriced_requests} unpriced" if unpriced_requests else "")
