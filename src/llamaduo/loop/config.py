"""Config of the LlamaDuo loop: how much to synthesise each round and when to stop."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llamaduo.configbase import Section


class SynthSchedule(Section):
    """Size of the synthetic batch added after an iteration that missed the target."""

    mode: Literal["fixed", "geometric"] = "fixed"
    """fixed: `size` pairs every round; geometric: `size`, then `size*factor`, ... (the paper's grid went 1k to 256k)."""
    size: int = Field(100, ge=1)
    """Accepted pairs in the first synthetic batch."""
    factor: float = Field(2.0, ge=1)
    """Growth per round in geometric mode."""
    max_size: int | None = Field(None, ge=1)
    """Cap on one batch."""


class LoopConfig(Section):
    """`llamaduo run`: train, infer, evaluate; synthesise more and retrain until a stop rule fires."""

    max_iterations: int = Field(3, ge=1)
    """Stop after this many train/evaluate iterations."""
    min_train: int = Field(0, ge=0)
    """If train holds fewer examples than this, synthesise up to it before the first training."""
    schedule: SynthSchedule = Field(default_factory=SynthSchedule)
    retrain_from: Literal["base", "last"] = "base"
    """Retrain each round from the base model, or continue from the last adapter."""
    patience: int = Field(2, ge=1)
    """Stop when this many iterations in a row bring no significant improvement."""
    plateau_metric: str = "precision.mean"
    """The metric watched for a plateau: the run stops when none of the last `patience` iterations has a 95% CI lower bound above the best earlier mean. An iteration without a CI (too few items) is no evidence either way, so it never makes a plateau."""
    max_failed_judgments: float = Field(0.5, ge=0, le=1)
    """Largest share of an evaluation's judgments that may fail; above it the evaluation measured nothing, and the run stops (exit code 2) before training again, naming the cause and the fix. A judge that cannot be reached at all stops the run whatever this share."""
    baseline: bool = True
    """Also answer the test split with the untrained base model, to report judge-free gains."""
