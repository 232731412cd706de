"""The migration loop's tables, in the capture store's database beside `llamaduo_captures`.

`llamaduo_capture_scores` holds the live judgment of a capture row (keyed by its id), `llamaduo_gateway_events` every
mode change with its evidence and every engine crash seen, and `llamaduo_gateway_lease` the one row that says which
replica decides. Times are epoch seconds (floats), so SQLite and PostgreSQL compare them the same way.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from llamaduo.deploy.capture import CaptureStore

MODE_EVENTS = ("start", "transition", "manual")
LEASE = "policy"


def epoch(value: dt.datetime | None) -> float | None:
    """A stored datetime as epoch seconds; SQLite hands back naive UTC datetimes, PostgreSQL aware ones."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).timestamp()


def as_datetime(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


def day_start(now: float) -> float:
    """Midnight UTC of the day `now` falls in: the daily live-judging budget resets there."""
    day = dt.datetime.fromtimestamp(now, dt.timezone.utc).date()
    return dt.datetime.combine(day, dt.time(), dt.timezone.utc).timestamp()


class LiveStore:
    """The migration tables over a CaptureStore's engine; every method is one short transaction."""

    def __init__(self, captures: CaptureStore):
        sa = captures._sa
        self.sa, self.captures, self.engine = sa, captures, captures.engine
        meta = sa.MetaData()
        self.scores = sa.Table(
            "llamaduo_capture_scores", meta,
            sa.Column("capture_id", sa.String(32), primary_key=True),
            sa.Column("ts", sa.Float, nullable=False, index=True),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("reason", sa.Text),
            sa.Column("scores", sa.JSON),
            sa.Column("per_judge", sa.JSON),
            sa.Column("reference_from", sa.String(16)),
            sa.Column("reference", sa.JSON),
            sa.Column("rubric", sa.String(128)),
            sa.Column("judgments", sa.Integer, nullable=False, default=0),
            sa.Column("failed_judgments", sa.Integer, nullable=False, default=0),
            sa.Column("cost_usd", sa.Float, nullable=False, default=0.0),
        )
        self.events = sa.Table(
            "llamaduo_gateway_events", meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("ts", sa.Float, nullable=False, index=True),
            sa.Column("kind", sa.String(16), nullable=False),
            sa.Column("from_mode", sa.String(16)),
            sa.Column("to_mode", sa.String(16)),
            sa.Column("reason", sa.Text),
            sa.Column("evidence", sa.JSON),
            sa.Column("replica", sa.String(64)),
        )
        self.lease = sa.Table(
            "llamaduo_gateway_lease", meta,
            sa.Column("name", sa.String(32), primary_key=True),
            sa.Column("holder", sa.String(64), nullable=False),
            sa.Column("expires_at", sa.Float, nullable=False),
        )
        meta.create_all(self.engine)

    # ---- live judgments ------------------------------------------------------------------------

    def put_score(self, capture_id: str, status: str, *, reason: str | None = None, scores: dict | None = None,
                  per_judge: dict | None = None, reference_from: str | None = None, reference: dict | None = None,
                  rubric: str | None = None, judgments: int = 0, failed: int = 0, cost_usd: float = 0.0) -> None:
        row = dict(ts=time.time(), status=status, reason=reason, scores=scores, per_judge=per_judge, reference_from=reference_from,
                   reference=reference, rubric=rubric, judgments=judgments, failed_judgments=failed, cost_usd=cost_usd)
        with self.engine.begin() as conn:
            done = conn.execute(self.scores.update().where(self.scores.c.capture_id == capture_id).values(**row))
            if done.rowcount == 0:
                conn.execute(self.scores.insert().values(capture_id=capture_id, **row))

    def spent_since(self, since: float) -> float:
        sa = self.sa
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(self.scores.c.cost_usd), 0.0)).where(self.scores.c.ts >= since)).scalar()
        return float(value or 0.0)

    def capture(self, capture_id: str) -> dict[str, Any] | None:
        table = self.captures.table
        with self.engine.connect() as conn:
            row = conn.execute(table.select().where(table.c.id == capture_id)).first()
        return dict(row._mapping) if row is not None else None

    def judged_rows(self, *, below: float | None = None, metric: str = "precision") -> list[dict[str, Any]]:
        """Judged pairs joined with their capture rows, oldest first; with `below`, only those scoring under it."""
        sa, c, s = self.sa, self.captures.table, self.scores
        query = (sa.select(c, s.c.scores, s.c.reference, s.c.reference_from, s.c.ts.label("judged_ts"))
                 .join(s, s.c.capture_id == c.c.id).where(s.c.status == "judged").order_by(s.c.ts, c.c.id))
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
        if below is not None:
            rows = [r for r in rows if (r["scores"] or {}).get(metric) is not None and r["scores"][metric] < below]
        return rows

    # ---- the evidence the policy reads ---------------------------------------------------------

    def evidence(self, after: float | None, until: float) -> tuple[list[dict], list[dict], list[dict]]:
        """(requests, judgments, crash events) with after < ts <= until, each oldest first."""
        sa, c, s, e = self.sa, self.captures.table, self.scores, self.events
        lo = after if after is not None else float("-inf")
        cols = [c.c.id, c.c.created_at, c.c.mode, c.c.answered_by, c.c.status, c.c.fallback_reason, c.c.latency_ms, c.c.local_latency_ms]
        q_req = sa.select(*cols).where(c.c.created_at <= as_datetime(until)).order_by(c.c.created_at, c.c.id)
        if after is not None:
            q_req = q_req.where(c.c.created_at > as_datetime(after))
        q_judged = (sa.select(s.c.capture_id, s.c.ts, s.c.scores).where(s.c.status == "judged", s.c.ts > lo, s.c.ts <= until)
                    .order_by(s.c.ts, s.c.capture_id))
        q_crash = sa.select(e).where(e.c.kind == "engine_crash", e.c.ts > lo, e.c.ts <= until).order_by(e.c.ts, e.c.id)
        with self.engine.connect() as conn:
            requests = [dict(r._mapping) | {"ts": epoch(r.created_at)} for r in conn.execute(q_req)]
            judged = [dict(r._mapping) for r in conn.execute(q_judged)]
            crashes = [dict(r._mapping) for r in conn.execute(q_crash)]
        return requests, judged, crashes

    def window(self, size: int) -> tuple[list[dict], list[dict]]:
        """The last `size` requests (with their local shadow results) and the last `size` live judgment rows, oldest first."""
        c, s = self.captures.table, self.scores
        with self.engine.connect() as conn:
            requests = [dict(r._mapping) for r in conn.execute(c.select().order_by(c.c.created_at.desc(), c.c.id.desc()).limit(size))]
            scores = [dict(r._mapping) for r in conn.execute(s.select().order_by(s.c.ts.desc()).limit(size))]
        return requests[::-1], scores[::-1]

    # ---- events and the mode -------------------------------------------------------------------

    def add_event(self, kind: str, *, from_mode: str | None = None, to_mode: str | None = None, reason: str | None = None,
                  evidence: dict | None = None, replica: str | None = None, ts: float | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.events.insert().values(ts=ts if ts is not None else time.time(), kind=kind, from_mode=from_mode,
                                                     to_mode=to_mode, reason=reason, evidence=evidence, replica=replica))

    def events_list(self, kinds: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        e = self.events
        query = e.select().order_by(e.c.ts, e.c.id)
        if kinds:
            query = query.where(e.c.kind.in_(kinds))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def current_mode(self) -> tuple[str | None, float | None]:
        """The mode the last start, transition or manual event set, and when (None: the store has none yet)."""
        e = self.events
        query = e.select().where(e.c.kind.in_(MODE_EVENTS)).order_by(e.c.ts.desc(), e.c.id.desc()).limit(1)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return (row.to_mode, row.ts) if row is not None else (None, None)

    def start(self, mode: str, replica: str) -> str:
        """The current mode, recording `mode` as the start when the store has none; one replica's start wins."""
        current, _ = self.current_mode()
        if current is None:
            with self.engine.begin() as conn:  # insert only if still empty: replicas starting together agree
                e = self.events
                exists = conn.execute(self.sa.select(e.c.id).where(e.c.kind.in_(MODE_EVENTS)).limit(1)).first()
                if exists is None:
                    conn.execute(e.insert().values(ts=time.time(), kind="start", to_mode=mode, replica=replica,
                                                   reason=f"policy started in {mode} mode"))
            current, _ = self.current_mode()
        return current or mode

    # ---- the lease -----------------------------------------------------------------------------

    def take_lease(self, holder: str, seconds: float, now: float | None = None) -> bool:
        """Hold (or renew) the decision-maker's lease; False while another live holder has it."""
        sa, lease = self.sa, self.lease
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            # PostgreSQL re-checks the WHERE after waiting on a racing update's row lock, so only one replica wins.
            won = conn.execute(lease.update().where(lease.c.name == LEASE, sa.or_(lease.c.holder == holder, lease.c.expires_at < now))
                               .values(holder=holder, expires_at=now + seconds)).rowcount
        if won:
            return True
        try:
            with self.engine.begin() as conn:
                conn.execute(lease.insert().values(name=LEASE, holder=holder, expires_at=now + seconds))
            return True
        except sa.exc.IntegrityError:
            return False

    def drop_lease(self, holder: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.lease.delete().where(self.lease.c.name == LEASE, self.lease.c.holder == holder))

    def lease_holder(self) -> tuple[str | None, float | None]:
        with self.engine.connect() as conn:
            row = conn.execute(self.lease.select().where(self.lease.c.name == LEASE)).first()
        return (row.holder, row.expires_at) if row is not None else (None, None)
