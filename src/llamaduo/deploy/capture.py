"""The gateway's capture store: prompt/response pairs in any SQLAlchemy database (SQLite by default, PostgreSQL for replicas).

`export_jsonl` writes OpenAI chat-completion log rows that `llamaduo data ingest` reads, with the satisfaction flag.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from pathlib import Path
from typing import Any

from llamaduo.atomic import atomic_path
from llamaduo.errors import LlamaduoError, MissingExtra


def _sqlalchemy():
    try:
        import sqlalchemy
    except ImportError:
        raise MissingExtra("sqlalchemy", "serve") from None
    return sqlalchemy


def resolve_store_url(url: str, base: Path) -> str:
    """Relative SQLite paths resolve against the project folder, whose parent folders are created."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite://" and ":memory:" not in url:
        path = base / url[len(prefix):]
        path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(path)
    if url.startswith(prefix + "/"):
        Path(url[len(prefix):]).parent.mkdir(parents=True, exist_ok=True)
    return url


class CaptureStore:
    """One table, `llamaduo_captures`; every method is a short transaction, safe across threads and replicas."""

    def __init__(self, url: str):
        sa = _sqlalchemy()
        self._sa = sa
        try:
            self.engine = sa.create_engine(url, pool_pre_ping=True)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
            raise LlamaduoError(f"gateway.store_url is not a usable SQLAlchemy URL: {exc}", "Use sqlite:///path.sqlite or postgresql+psycopg://user@host/db.") from None
        except ImportError as exc:
            raise LlamaduoError(f"the database driver for gateway.store_url is missing ({exc.name})", "Install it, e.g. `pip install 'psycopg[binary]'` for PostgreSQL.") from None
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        meta = sa.MetaData()
        self.table = sa.Table(
            "llamaduo_captures", meta,
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
            sa.Column("client", sa.String(128), nullable=False),
            sa.Column("mode", sa.String(16), nullable=False),
            sa.Column("answered_by", sa.String(16), nullable=False),
            sa.Column("model", sa.String(256), nullable=False),
            sa.Column("request", sa.JSON, nullable=False),
            sa.Column("response", sa.JSON),
            sa.Column("local_response", sa.JSON),
            sa.Column("status", sa.Integer, nullable=False),
            sa.Column("latency_ms", sa.Float),
            sa.Column("local_latency_ms", sa.Float),
            sa.Column("fallback_reason", sa.Text),
            sa.Column("satisfactory", sa.Boolean),
            sa.Column("feedback_note", sa.Text),
        )
        try:
            meta.create_all(self.engine)
        except sa.exc.OperationalError as exc:
            raise LlamaduoError(f"cannot open the capture store: {exc.orig}", "Check gateway.store_url and that the database is running.") from None

    def add(self, *, client: str, mode: str, answered_by: str, model: str, request: dict, response: dict | None, status: int,
            latency_ms: float | None, fallback_reason: str | None = None, capture_id: str | None = None) -> str:
        capture_id = capture_id or uuid.uuid4().hex
        row = dict(id=capture_id, created_at=dt.datetime.now(dt.timezone.utc), client=client, mode=mode, answered_by=answered_by,
                   model=model, request=request, response=response, status=status, latency_ms=latency_ms, fallback_reason=fallback_reason)
        with self.engine.begin() as conn:
            conn.execute(self.table.insert().values(**row))
        return capture_id

    def set_local(self, capture_id: str, response: dict | None, latency_ms: float | None, error: str | None = None) -> None:
        values = {"local_response": response if response is not None else {"error": error}, "local_latency_ms": latency_ms}
        with self.engine.begin() as conn:
            conn.execute(self.table.update().where(self.table.c.id == capture_id).values(**values))

    def feedback(self, capture_id: str, satisfactory: bool, note: str | None = None) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                self.table.update().where(self.table.c.id == capture_id).values(satisfactory=satisfactory, feedback_note=note)
            )
        return result.rowcount == 1

    def rows(self, *, only_satisfactory: bool = False) -> list[dict[str, Any]]:
        query = self.table.select().where(self.table.c.status == 200).order_by(self.table.c.created_at, self.table.c.id)
        if only_satisfactory:
            query = query.where(self.table.c.satisfactory.is_(True))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def export_jsonl(self, path: str | os.PathLike[str], *, only_satisfactory: bool = False) -> int:
        """Write OpenAI chat-completion log rows (request, response, satisfactory, metadata); returns the row count."""
        rows = self.rows(only_satisfactory=only_satisfactory)
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            for row in rows:
                record: dict[str, Any] = {"request": row["request"], "response": row["response"]}
                if row["satisfactory"] is not None:
                    record["satisfactory"] = row["satisfactory"]
                record["metadata"] = {
                    "capture_id": row["id"], "client": row["client"], "answered_by": row["answered_by"],
                    "created_at": row["created_at"].isoformat() if row["created_at"] else None,
                }
                if row["local_response"] is not None:
                    record["metadata"]["local_response"] = row["local_response"]
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        return len(rows)

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # WAL lets the exporter read while the gateway writes; the busy timeout rides out short write locks.
    # synchronous=NORMAL skips the fsync per commit: a crashed gateway loses nothing, a power cut at most the last pairs.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()
