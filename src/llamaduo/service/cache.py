"""The project's service database: one SQLite file (WAL) holding the response cache, the spend ledger and batch jobs.

WAL lets several processes read while one writes; busy_timeout makes writers queue instead of failing.
synchronous=NORMAL skips the fsync per commit: a power cut may lose the last replies, which are then
simply asked again, while the database itself stays consistent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from llamaduo.service.types import Usage

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    cached_input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    run_id TEXT,
    stage TEXT,
    role TEXT,
    provider TEXT,
    model TEXT,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    cached_input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    cache_hit INTEGER NOT NULL DEFAULT 0,
    batch INTEGER NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 1,
    iteration INTEGER,
    priced INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS ledger_run ON ledger(run_id);
CREATE TABLE IF NOT EXISTS batch_jobs (
    job_key TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    job_id TEXT NOT NULL,
    status TEXT NOT NULL,
    items TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
"""
# Columns added after the first release, with their definitions: older databases gain them when opened.
LEDGER_ADDED = {"iteration": "INTEGER", "priced": "INTEGER NOT NULL DEFAULT 1"}


def cache_key(provider: str, model: str, messages: list[dict[str, Any]], params: dict[str, Any], schema: Any, sample: int) -> str:
    """Hash of everything that changes the reply; the sample index keeps M repeated judgments apart."""
    blob = json.dumps(
        {"p": provider, "m": model, "msgs": messages, "params": params, "schema": schema, "sample": sample},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


Reply = tuple[str, str, str, str, "str | None", Usage]
"""A reply to store: key, provider, model, text, finish_reason, usage."""


class GroupCommit:
    """Writes that arrive in the same event-loop turn share one transaction.

    At high concurrency many replies finish together, and one commit each was a quarter of the client's CPU per
    request. A caller gets control back only after its rows are committed, so a crash still loses no paid reply
    that was handed on; a cancelled caller's rows are written all the same.
    """

    def __init__(self, store: ServiceStore):
        self.store = store
        self._pending: list[tuple[list[Reply], dict[str, Any] | None]] = []
        self._done: asyncio.Future[None] | None = None

    async def record(self, replies: list[Reply], ledger_row: dict[str, Any] | None) -> None:
        self._pending.append((replies, ledger_row))
        if self._done is None:
            loop = asyncio.get_running_loop()
            self._done = loop.create_future()
            loop.call_soon(self._flush)
        await asyncio.shield(self._done)

    def _flush(self) -> None:
        writes, done = self._pending, self._done
        self._pending, self._done = [], None
        assert done is not None  # noqa: S101 - set by the record() that scheduled this flush
        try:
            self.store.record_many(writes)
        except Exception as exc:  # noqa: BLE001 - every waiter gets the database's error
            done.set_exception(exc)
        else:
            done.set_result(None)


class CachedReply:
    __slots__ = ("text", "finish_reason", "usage")

    def __init__(self, text: str, finish_reason: str | None, usage: Usage):
        self.text = text
        self.finish_reason = finish_reason
        self.usage = usage


class ServiceStore:
    """One connection to the project's service database. Use from one thread (the event loop's)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        """Opened (and the file created) on first use, so a run that fails before its first reply leaves no file."""
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread=False: run_sync may drive successive event loops from different threads.
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.executescript(SCHEMA)
            have = {row[1] for row in conn.execute("PRAGMA table_info(ledger)")}
            for column, definition in LEDGER_ADDED.items():
                if column not in have:
                    try:
                        conn.execute(f"ALTER TABLE ledger ADD COLUMN {column} {definition}")
                    except sqlite3.OperationalError as exc:  # another process added it first
                        if "duplicate column" not in str(exc):
                            raise
            self._conn = conn
        return self._conn

    def _exists(self) -> bool:
        """Whether reads can find anything: this process opened the file, or another one created it."""
        return self._conn is not None or self.path.is_file()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ---- response cache ----------------------------------------------------------------------

    def get(self, key: str) -> CachedReply | None:
        if not self._exists():
            return None
        row = self.conn.execute(
            "SELECT text, finish_reason, input_tokens, cached_input_tokens, output_tokens FROM responses WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        return CachedReply(row[0], row[1], Usage(input_tokens=row[2], cached_input_tokens=row[3], output_tokens=row[4]))

    def record(self, replies: list[Reply], ledger_row: dict[str, Any] | None) -> None:
        """Store replies (key, provider, model, text, finish_reason, usage) and one ledger row in one transaction."""
        self.record_many([(replies, ledger_row)])

    def record_many(self, writes: list[tuple[list[Reply], dict[str, Any] | None]]) -> None:
        """Several `record` calls in one transaction (a commit costs more than the rows it carries)."""
        now = time.time()
        rows = [(k, p, m, t, f, u.input_tokens, u.cached_input_tokens, u.output_tokens, now) for replies, _ in writes for k, p, m, t, f, u in replies]
        with self._transaction():
            if rows:
                self.conn.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            for _, ledger_row in writes:
                if ledger_row is not None:
                    self._insert_ledger(ledger_row, now)

    def add_ledger(self, row: dict[str, Any]) -> None:
        with self._transaction():
            self._insert_ledger(row, time.time())

    def _insert_ledger(self, row: dict[str, Any], now: float) -> None:
        self.conn.execute(
            "INSERT INTO ledger (ts, run_id, iteration, stage, role, provider, model, input_tokens, cached_input_tokens,"
            " output_tokens, cost_usd, cache_hit, batch, requests, priced) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                now, row.get("run_id"), row.get("iteration"), row.get("stage"), row.get("role"), row.get("provider"), row.get("model"),
                row.get("input_tokens", 0), row.get("cached_input_tokens", 0), row.get("output_tokens", 0),
                row.get("cost_usd", 0.0), int(row.get("cache_hit", False)), int(row.get("batch", False)), row.get("requests", 1),
                int(row.get("priced", True)),
            ),
        )

    def total_cost(self) -> float:
        return self.ledger_cost_since(0)[0]

    def ledger_cost_since(self, row_id: int) -> tuple[float, int]:
        """Spend recorded after ledger row `row_id` (by any process), and the newest row id."""
        if not self._exists():
            return 0.0, row_id
        added, last = self.conn.execute("SELECT COALESCE(SUM(cost_usd), 0), MAX(id) FROM ledger WHERE id > ?", (row_id,)).fetchone()
        return float(added), int(last) if last is not None else row_id

    def stats(self) -> dict[str, Any]:
        entries, size_text = self.conn.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(text)), 0) FROM responses").fetchone()
        by_model = self.conn.execute("SELECT provider, model, COUNT(*) FROM responses GROUP BY provider, model ORDER BY 3 DESC").fetchall()
        hits, calls = self.conn.execute("SELECT COALESCE(SUM(cache_hit), 0), COUNT(*) FROM ledger").fetchone()
        jobs = self.conn.execute("SELECT COUNT(*) FROM batch_jobs WHERE status != 'done'").fetchone()[0]
        return {
            "path": str(self.path),
            "entries": entries,
            "text_bytes": size_text,
            "file_bytes": sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file()),
            "by_model": [{"provider": p, "model": m, "entries": n} for p, m, n in by_model],
            "ledger_rows": calls,
            "cache_hits": hits,
            "pending_batch_jobs": jobs,
        }

    def clear(self, model: str | None = None) -> int:
        """Drop cached replies (all, or one model's). The ledger of past spend is kept."""
        with self._transaction():
            if model:
                cur = self.conn.execute("DELETE FROM responses WHERE model = ?", (model,))
            else:
                cur = self.conn.execute("DELETE FROM responses")
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.execute("VACUUM")
        return cur.rowcount

    # ---- batch jobs --------------------------------------------------------------------------

    def batch_job(self, job_key: str) -> dict[str, Any] | None:
        if not self._exists():
            return None
        row = self.conn.execute(
            "SELECT provider, model, job_id, status, items, updated_at FROM batch_jobs WHERE job_key = ?", (job_key,)
        ).fetchone()
        if row is None:
            return None
        return {"provider": row[0], "model": row[1], "job_id": row[2], "status": row[3], "items": json.loads(row[4]), "updated_at": row[5]}

    def save_batch_job(self, job_key: str, provider: str, model: str, job_id: str, status: str, items: dict[str, str]) -> None:
        now = time.time()
        with self._transaction():
            self.conn.execute(
                "INSERT OR REPLACE INTO batch_jobs VALUES (?, ?, ?, ?, ?, ?, COALESCE((SELECT created_at FROM batch_jobs WHERE job_key = ?), ?), ?)",
                (job_key, provider, model, job_id, status, json.dumps(items), job_key, now, now),
            )

    def set_batch_status(self, job_key: str, status: str) -> None:
        with self._transaction():
            self.conn.execute("UPDATE batch_jobs SET status = ?, updated_at = ? WHERE job_key = ?", (status, time.time(), job_key))

    def _transaction(self) -> _Transaction:
        return _Transaction(self.conn)


class _Transaction:
    """BEGIN IMMEDIATE takes the write lock up front, so two processes never deadlock upgrading read locks."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
