"""The loop's persisted state: which steps finished and what they produced, written after every step.

A resumed run replays nothing that a finished step recorded; a step that was cut off runs again, and
its own stage makes that cheap (the response cache, training checkpoints, accepted synthetic pairs).

Layout of a loop run folder `runs/<run-id>/` (iteration 0 is the untrained base model):
    manifest.json, events.jsonl, state.json (this model)
    iter-0/answers.jsonl                      base model answers (when loop.baseline)
    iter-<k>/train/                           training output: adapter/, merged/, checkpoints/, fingerprint.json
    iter-<k>/answers.jsonl                    `llamaduo.records.Answer` rows
    eval/iter-<k>/report.json                 `llamaduo.evaluate.report.EvalReport`
    eval/iter-<k>/scores.jsonl, judgments.jsonl
    iter-<k>/synth/report.json, gate_report.json, accepted.jsonl   the batch synthesised after iteration k
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from llamaduo.atomic import atomic_write_json

STATE_FILE = "state.json"


class MetricSummary(BaseModel):
    mean: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None


class IterationRecord(BaseModel):
    """One row of the per-iteration table."""

    iteration: int
    train_size: int = 0
    synthetic_added: int = 0
    synthetic_total: int = 0
    metrics: dict[str, MetricSummary] = Field(default_factory=dict)
    """`metric.stat` -> value with its 95% CI, from evaluation."""
    judge_free: dict[str, MetricSummary] = Field(default_factory=dict)
    target_met: bool = False
    target_explanation: str = ""
    spend_usd: float = 0.0
    """The ledger's figure for this iteration when it was recorded (its synthetic data and its evaluation); views read the ledger itself."""
    seconds: float = 0.0
    model_dir: str | None = None
    not_measured: str | None = None
    """Why this iteration's judged scores are void (most judgments failed); its judged metrics then hold no values."""


class LoopState(BaseModel):
    run_id: str
    config_hash: str
    """Hash of the config sections that decide the results; a resume with other values is refused."""
    status: Literal["running", "done", "stopped", "failed", "interrupted"] = "running"
    stage: str = "start"
    iteration: int = 0
    stop_reason: str | None = None
    steps: dict[str, Any] = Field(default_factory=dict)
    """Finished steps -> what they returned (JSON)."""
    iterations: list[IterationRecord] = Field(default_factory=list)
    baseline: dict[str, MetricSummary] = Field(default_factory=dict)
    best_iteration: int | None = None
    best_model_dir: str | None = None
    problem: str | None = None
    """With stop_reason `not_measured`: the cause and the fix, as the run printed them."""
    started_at: float = 0.0
    step_seconds: dict[str, float] = Field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path) -> LoopState | None:
        path = folder / STATE_FILE
        if not path.is_file():
            return None
        return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))

    def record(self, iteration: int | None) -> IterationRecord | None:
        """The finished iteration's record (0 is the baseline), or None."""
        return next((r for r in self.iterations if r.iteration == iteration), None)

    def save(self, folder: Path) -> None:
        atomic_write_json(folder / STATE_FILE, self.model_dump(mode="json"))
