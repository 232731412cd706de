"""Config of evaluation: the judge rubric, repeats, thresholds and the pass/fail target."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llamaduo.configbase import Section


class EvalConfig(Section):
    """How answers are judged and what counts as good enough."""

    repeats: int = Field(3, ge=1, le=50)
    """M judgments per answer (the paper used 10)."""
    thresholds: list[float] = Field(default_factory=lambda: [50.0, 70.0])
    """Coverage % is the share of scores at or above each threshold."""
    mode: Literal["pointwise", "pairwise"] = "pointwise"
    """pointwise: 0-100 similarity and precision; pairwise: against the service LLM's own answer, both orders."""
    ensemble: Literal["mean", "median"] = "mean"
    """How several judges' scores combine."""
    rubric: str | None = None
    """Path of a Jinja rubric that overrides the built-in one."""
    metrics: list[str] = Field(default_factory=lambda: ["rouge_l", "embedding"])
    """Judge-free metrics computed when references exist."""
    target: dict[str, float] = Field(default_factory=lambda: {"precision.mean": 70.0, "precision.coverage@50": 0.8})
    """Pass rule: every `metric.stat` must reach its value."""
    bootstrap: int = Field(1000, ge=100)
    """Bootstrap resamples for the 95% confidence intervals."""
