"""The runs registry: an SQLite index of run folders (status, headline metrics, config) for `llamaduo runs`.

The folders stay the source of truth; the index is refreshed from them on every listing (unchanged folders
are skipped by their file signature), so a deleted index costs nothing but one rescan.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from llamaduo.errors import LlamaduoError
from llamaduo.report.loader import RunData, parse_model, read_json, run_root
from llamaduo.report.spend import spend_by_run

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    root TEXT NOT NULL,
    signature TEXT NOT NULL,
    created_at TEXT,
    status TEXT NOT NULL,
    stage TEXT,
    iterations INTEGER NOT NULL DEFAULT 0,
    best_iteration INTEGER,
    target_met INTEGER NOT NULL DEFAULT 0,
    stop_reason TEXT,
    metrics TEXT NOT NULL,
    baseline TEXT NOT NULL,
    config TEXT NOT NULL,
    indexed_at REAL NOT NULL
);
"""
_COLUMNS = ("run_id", "root", "signature", "created_at", "status", "stage", "iterations", "best_iteration", "target_met",
            "stop_reason", "metrics", "baseline", "config", "indexed_at")


class RunSummary(BaseModel):
    run_id: str
    root: str
    created_at: str | None = None
    status: str
    stage: str | None = None
    iterations: int = 0
    best_iteration: int | None = None
    target_met: bool = False
    stop_reason: str | None = None
    spend_usd: float = 0.0
    """What the run spent, read from the service ledger whenever the summary is read (the index keeps no copy)."""
    unpriced_requests: int = 0
    """Paid requests to models without a known price, which `spend_usd` leaves out."""
    metrics: dict[str, float | None] = Field(default_factory=dict)
    """`metric.stat` -> value of the best (else latest) iteration."""
    baseline: dict[str, float | None] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)


class Comparison(BaseModel):
    a: RunSummary
    b: RunSummary
    metrics: list[tuple[str, float | None, float | None, float | None]]
    """(metric, A, B, B - A)."""
    config_diff: list[tuple[str, Any, Any]]
    """(dotted key, A's value, B's value) for every key whose values differ."""


def _signature(root: Path) -> str:
    parts = []
    for name in ("manifest.json", "state.json"):
        path = root / name
        parts.append(str(path.stat().st_mtime_ns) if path.is_file() else "-")
    parts.append(str(len(list(root.glob("eval/iter-*/report.json")) + list(root.glob("iter-*/eval.json")))))
    return ":".join(parts)


def summarize_root(root: Path) -> RunSummary:
    """A run's headline figures from its manifest and loop state (or its latest eval report when there is no state)."""
    from llamaduo.loop.state import LoopState

    manifest = read_json(root / "manifest.json")
    if not isinstance(manifest, dict):
        raise LlamaduoError(f"{root / 'manifest.json'} is corrupt (not a JSON object)", "Restore the file or delete the run folder")
    summary = RunSummary(run_id=root.name, root=str(root), created_at=manifest.get("created_at"), status="running",
                         config=manifest.get("config") or {})
    state_path = root / "state.json"
    state = parse_model(LoopState, read_json(state_path), state_path) if state_path.is_file() else None
    if state is not None:
        # Iteration 0 is the loop's evaluation of the untrained base model (unless a separate baseline/ folder holds it).
        trained = state.iterations if (root / "baseline").is_dir() else [it for it in state.iterations if it.iteration > 0]
        summary.status, summary.stage, summary.iterations = state.status, state.stage, len(trained)
        summary.best_iteration, summary.stop_reason = state.best_iteration, state.stop_reason
        chosen = next((it for it in trained if it.iteration == state.best_iteration), None) or (trained[-1] if trained else None)
        if chosen is not None:
            summary.metrics = {k: s.mean for k, s in chosen.metrics.items()}
            summary.target_met = chosen.target_met
        summary.baseline = {k: s.mean for k, s in state.baseline.items()}
        return summary
    reports = sorted(root.glob("eval/iter-*/report.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    reports += sorted(root.glob("iter-*/eval.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    if reports:
        raw = read_json(reports[-1])
        summary.iterations = sum(1 for p in reports if p.parent.name != "iter-0")  # iter-0: the base model
        summary.metrics = {f"{m}.mean": (v.get("per_sample") or {}).get("mean") for m, v in (raw.get("metrics") or {}).items()}
        summary.target_met = bool((raw.get("target") or {}).get("passed"))
    return summary


class RunsRegistry:
    """The index; `ledger` is the project's service database, which every spend figure is read from."""

    def __init__(self, path: Path, ledger: Path | None = None):
        self.path = Path(path)
        self.ledger = Path(ledger) if ledger is not None else None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            columns = {row[1] for row in self.conn.execute("PRAGMA table_info(runs)")}
            if columns and columns != set(_COLUMNS):
                # An index written by another version: it is only an index, so rebuild it from the run folders.
                self.conn.execute("DROP TABLE runs")
            self.conn.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise LlamaduoError(f"the runs index {self.path} is unreadable ({exc})", "Delete it; `llamaduo runs list` rebuilds it from runs/") from None

    def __enter__(self) -> RunsRegistry:
        return self

    def __exit__(self, *_: object) -> None:
        self.conn.close()

    def index_run(self, run: RunData) -> RunSummary:
        return self.index_root(run.root, force=True)

    def index_root(self, root: Path, *, force: bool = False) -> RunSummary:
        signature = _signature(root)
        if not force:
            row = self.conn.execute("SELECT signature FROM runs WHERE run_id = ?", (root.name,)).fetchone()
            if row and row[0] == signature:
                return self.get(root.name)
        summary = summarize_root(root)
        self.conn.execute(
            "INSERT OR REPLACE INTO runs (run_id, root, signature, created_at, status, stage, iterations, best_iteration, target_met,"
            " stop_reason, metrics, baseline, config, indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (summary.run_id, summary.root, signature, summary.created_at, summary.status, summary.stage, summary.iterations,
             summary.best_iteration, int(summary.target_met), summary.stop_reason, json.dumps(summary.metrics),
             json.dumps(summary.baseline), json.dumps(summary.config, default=str), time.time()),
        )
        return self._with_spend(summary)

    def refresh(self, runs_dir: Path) -> list[str]:
        """Index every run folder; returns one line per folder that could not be read (the rest are still indexed)."""
        problems = []
        roots = sorted(p.parent for p in Path(runs_dir).glob("*/manifest.json")) if Path(runs_dir).is_dir() else []
        for root in roots:
            try:
                self.index_root(root)
            except LlamaduoError as exc:
                problems.append(f"{root.name}: {exc.problem}")
        present = {r.name for r in roots}
        for (run_id, root) in self.conn.execute("SELECT run_id, root FROM runs").fetchall():
            if run_id not in present and not (Path(root) / "manifest.json").is_file():
                self.conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
        return problems

    def list(self) -> list[RunSummary]:
        rows = self.conn.execute("SELECT run_id FROM runs ORDER BY created_at DESC, run_id").fetchall()
        spend = spend_by_run(self.ledger) if self.ledger is not None else {}
        return [self.get(r[0], spend=spend) for r in rows]

    def get(self, run_id: str, *, spend: dict[str, tuple[float, int]] | None = None) -> RunSummary:
        row = self.conn.execute(
            "SELECT run_id, root, created_at, status, stage, iterations, best_iteration, target_met, stop_reason, metrics, baseline, config"
            " FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise LlamaduoError(f"no run {run_id} in the runs index", "List runs with `llamaduo runs list`")
        keys = ("run_id", "root", "created_at", "status", "stage", "iterations", "best_iteration", "target_met", "stop_reason")
        summary = RunSummary(**dict(zip(keys, row[:9], strict=True)), metrics=json.loads(row[9]), baseline=json.loads(row[10]),
                             config=json.loads(row[11]))
        return self._with_spend(summary, spend)

    def _with_spend(self, summary: RunSummary, spend: dict[str, tuple[float, int]] | None = None) -> RunSummary:
        if spend is None:
            spend = spend_by_run(self.ledger) if self.ledger is not None else {}
        summary.spend_usd, summary.unpriced_requests = spend.get(summary.run_id, (0.0, 0))
        return summary

    def compare(self, a: str, b: str) -> Comparison:
        ra, rb = self.get(a), self.get(b)
        names = sorted(set(ra.metrics) | set(rb.metrics))
        metrics = []
        for name in names:
            va, vb = ra.metrics.get(name), rb.metrics.get(name)
            metrics.append((name, va, vb, vb - va if va is not None and vb is not None else None))
        fa, fb = flatten(ra.config), flatten(rb.config)
        diff = [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
        return Comparison(a=ra, b=rb, metrics=metrics, config_diff=diff)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config as `section.key -> value`; lists stay whole values, since their items have no names."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def open_registry(config: Any) -> RunsRegistry:
    """The project's registry, whose spend figures come from the project's service ledger."""
    return RunsRegistry(config.path(config.report.registry_path), config.path(config.service.cache_path))


def ensure_indexed(registry: RunsRegistry, runs_dir: Path, run_id: str) -> None:
    """Index one run by id (so `runs show X` works even before a listing), with the usual missing-run error."""
    registry.index_root(run_root(runs_dir, run_id))
