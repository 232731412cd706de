"""Drift back into the loop: live pairs the judge scored low become coverage data (the service's answer as the reference),
and `llamaduo run --from-capture` starts the next run from the current best model.

The pairs go through `llamaduo data ingest` and `llamaduo data split` as any other data does, so the frozen test split
stays frozen and the train split is deduplicated and decontaminated against it.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import BaseModel, Field

from llamaduo.errors import LlamaduoError


class DriftReport(BaseModel):
    metric: str
    below: float
    low_pairs: int
    """Judged live pairs scoring under `below` on `metric`."""
    file: str
    """The OpenAI chat-log JSONL they were written to (inside the project)."""
    task: str
    raw_version: str | None = None
    added: int = 0
    """Pairs new to the raw split (the rest were already there)."""
    train_version: str | None = None
    dropped: dict[str, int] = Field(default_factory=dict)
    """Train rows the split's dedup and test decontamination removed, by reason."""


def default_cut(config: Any) -> tuple[str, float]:
    """The policy's first coverage target (precision.coverage@70 -> precision below 70), else precision below 70."""
    from llamaduo.evaluate.aggregate import parse_target_key

    for key in config.deploy.gateway.policy.target:
        metric, stat = parse_target_key(key)
        if stat.startswith("coverage@"):
            return metric, float(stat.split("@", 1)[1])
    return "precision", 70.0


def _task(config: Any, task: str | None) -> str:
    if task:
        return task
    from llamaduo.data.store import DatasetStore

    store = DatasetStore(config.path(config.data.store))
    tasks = sorted({e.task for e in store.examples("test") or store.examples("raw")})
    if len(tasks) == 1:
        return tasks[0]
    raise LlamaduoError(f"the live pairs need a task, and the dataset has {len(tasks) or 'no'} task(s) ({', '.join(tasks) or 'none'})",
                        "Pass --task NAME.")


def low_scored_pairs(config: Any, metric: str, below: float) -> list[dict[str, Any]]:
    """Each low-scored pair as an OpenAI chat-log row: the request, and the service's answer as the response."""
    from llamaduo.deploy.gateway_run import open_store
    from llamaduo.deploy.livestore import LiveStore

    store = open_store(config.deploy.gateway, config.workdir)
    try:
        rows = LiveStore(store).judged_rows(below=below, metric=metric)
    finally:
        store.close()
    out = []
    for row in rows:
        service_answer = row["reference"] if row["answered_by"] == "local" else row["response"]
        if not isinstance(service_answer, dict) or not isinstance(row["request"], dict):
            continue
        out.append({"request": row["request"], "response": service_answer,
                    "metadata": {"capture_id": row["id"], "live_scores": row["scores"], "origin": "live_drift"}})
    return out


def drift_to_data(config: Any, *, task: str | None = None, metric: str | None = None, below: float | None = None) -> DriftReport:
    """Ingest the low-scored live pairs into the raw split and split again (decontaminated against the frozen test)."""
    from llamaduo.atomic import atomic_write_text
    from llamaduo.data.ingestion import ingest
    from llamaduo.data.splitting import split

    cut_metric, cut = default_cut(config)
    metric, below = metric or cut_metric, cut if below is None else below
    pairs = low_scored_pairs(config, metric, below)
    if not pairs:
        raise LlamaduoError(f"no judged live pair scores below {below:g} on {metric} in the capture store",
                            "Let the gateway judge more live pairs (deploy.gateway.live_eval; see `llamaduo status --live`), or raise --below.")
    task = _task(config, task)
    path = config.path(f".llamaduo/drift/live-{time.strftime('%Y%m%d-%H%M%S')}.jsonl")
    atomic_write_text(path, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    report = DriftReport(metric=metric, below=below, low_pairs=len(pairs), file=str(path), task=task)
    ingested = ingest(config, [str(path)], task=task, fmt="openai_log")
    report.raw_version, report.added = ingested.version, ingested.added
    done = split(config)
    report.train_version, report.dropped = done.train_version, done.dropped
    return report


def from_capture(config: Any, *, task: str | None = None, below: float | None = None) -> tuple[Any, DriftReport, str]:
    """(the config of the next run, the drift report, how its base model was found): the drift data is in the dataset,
    and training starts from the current best model."""
    from llamaduo.artifacts import resolve_artifact

    best = resolve_artifact(None, config, fetch=False)
    report = drift_to_data(config, task=task, below=below)
    train = config.train.model_copy(update={"base_model": str(best.path)})
    return config.model_copy(update={"train": train}), report, best.describe()
