"""The records evaluation writes: per-answer scores and the report with aggregates, failures, trust and the target verdict."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from llamaduo.evaluate.aggregate import Summary, TargetVerdict


class ItemScores(BaseModel):
    """All scores of one answer (one of the K samples of a prompt); judge scores are ensembled across judges."""

    example_id: str
    task: str
    sample: int
    scores: dict[str, float | None] = Field(default_factory=dict)
    """metric -> 0-100 score (None: not measurable here, e.g. every judgment failed)."""
    per_judge: dict[str, dict[str, float]] = Field(default_factory=dict)
    """judge label -> metric -> mean of its successful repeats."""
    spread: dict[str, float] = Field(default_factory=dict)
    """metric -> max - min across judges (ensembles only)."""
    failed_judgments: int = 0
    sandbox: list[str] = Field(default_factory=list)
    """pass@k only: the sandbox status of this sample (`passed`, or why not)."""


class MetricView(BaseModel):
    """A metric over every answer, and with K > 1 samples per prompt also per prompt (each view labelled)."""

    per_sample: Summary
    per_prompt_mean: Summary | None = None
    """Mean of a prompt's K samples, then aggregated over prompts."""
    best_of_k: Summary | None = None
    """Best of a prompt's K samples, then aggregated over prompts (an optimistic view)."""


class JudgeInfo(BaseModel):
    label: str
    """`judge0: openai/gpt-4o-mini`."""
    index: int
    provider: str
    model: str
    trust: dict[str, Any] | None = None
    """This judge's latest judge-check figures (agreement with human labels), or None if never checked."""


class PairwiseSummary(BaseModel):
    """Candidate vs the reference (the service LLM's answer), asked in both orders, over (answer, judge) pairs."""

    n: int
    win: float
    tie: float
    loss: float
    flip_rate: float | None
    """Share of pairs whose verdict changed when the order of the two answers was swapped."""


class Failures(BaseModel):
    judgments: int = 0
    """Failed judgments (after retries), out of `total_judgments`."""
    total_judgments: int = 0
    by_reason: dict[str, int] = Field(default_factory=dict)
    unscored_answers: int = 0
    """Answers for which every judgment of every judge failed."""
    sandbox: dict[str, int] = Field(default_factory=dict)
    """pass@k: non-passing runs by reason class (failed, timeout, error)."""
    examples: list[str] = Field(default_factory=list)
    """A few full failure reasons, to debug with."""


class EvalReport(BaseModel):
    """The result of `llamaduo eval` for one iteration."""

    run_id: str | None = None
    iteration: int = 0
    mode: str
    rubric: str | None = None
    """Rubric name@hash, so every score traces back to its template."""
    repeats: int
    answers: int
    prompts: int
    samples_per_prompt: int
    judged_prompts: int | None = None
    """Prompts the judges scored when `evaluate.judge_sample` picked fewer than all (none: every prompt)."""
    judges: list[JudgeInfo] = Field(default_factory=list)
    ensemble: str | None = None
    metrics: dict[str, MetricView] = Field(default_factory=dict)
    by_task: dict[str, dict[str, Summary]] = Field(default_factory=dict)
    by_judge: dict[str, dict[str, Summary]] = Field(default_factory=dict)
    judge_spread: dict[str, float] = Field(default_factory=dict)
    """metric -> mean over answers of the max-min spread between judges."""
    pairwise: PairwiseSummary | None = None
    offline_trust: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Judge-check figures of the judge-free scorers (ROUGE-L, embedding), when checked."""
    sandbox: str | None = None
    """The isolation layers pass@k ran under."""
    failures: Failures = Field(default_factory=Failures)
    target: TargetVerdict
    by_iteration: dict[int, dict[str, float | None]] = Field(default_factory=dict)
    """Means of every metric at each iteration evaluated in this run so far."""
    warnings: list[str] = Field(default_factory=list)
    cost_usd: float = 0.0
