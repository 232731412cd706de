"""Aggregates of per-item scores: mean, median, coverage at thresholds, bootstrap 95% CIs, K-sample views, and the target check."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence

from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from llamaduo.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

MIN_CI_ITEMS = 2
"""Fewer items than this have no bootstrap interval."""
_TARGET_KEY = re.compile(r"^(?P<metric>[\w\-]+)\.(?P<stat>mean|median|coverage@(?P<t>\d+(?:\.\d+)?))$")


class Summary(BaseModel):
    """One metric over one group of items; scores are on a 0-100 scale, coverage is a 0-1 share."""

    n: int
    mean: float | None = None
    median: float | None = None
    coverage: dict[str, float] = Field(default_factory=dict)
    """`"50"` -> share of items scoring >= 50."""
    ci95: dict[str, tuple[float, float]] = Field(default_factory=dict)
    """Bootstrap percentile intervals of `mean` and of each `coverage@T`; a stat without one has no key (see `interval`)."""

    def interval(self, name: str) -> tuple[float, float] | None:
        """The 95% CI of `mean` or `coverage@T`, or None when it is unavailable (fewer than 2 items, or a bootstrap
        whose draws all agree): [v, v] would claim a certainty that one sample cannot give."""
        return self.ci95.get(name)

    def stat(self, name: str) -> float | None:
        if name in ("mean", "median"):
            return getattr(self, name)
        if name.startswith("coverage@"):
            return self.coverage.get(_threshold_key(float(name.split("@", 1)[1])))
        raise KeyError(name)


def _threshold_key(t: float) -> str:
    return f"{t:g}"


def summarize(values: Sequence[float], thresholds: Sequence[float], *, resamples: int = 1000, seed: int = 0) -> Summary:
    """Mean, median and coverage with bootstrap percentile CIs (resampling items with replacement)."""
    import numpy as np  # here, not at import: the config's target-key check imports this module on every command

    x = np.asarray([v for v in values if v is not None], dtype=float)
    if x.size == 0:
        return Summary(n=0)
    summary = Summary(
        n=int(x.size), mean=float(x.mean()), median=float(np.median(x)),
        coverage={_threshold_key(t): float((x >= t).mean()) for t in thresholds},
    )
    if x.size >= MIN_CI_ITEMS:
        rng = np.random.default_rng(seed)
        # Resample in chunks so that memory stays bounded for large N x K tables.
        chunk = max(1, 2_000_000 // x.size)
        means, covers = [], {t: [] for t in thresholds}
        for start in range(0, resamples, chunk):
            idx = rng.integers(0, x.size, size=(min(chunk, resamples - start), x.size))
            draw = x[idx]
            means.append(draw.mean(axis=1))
            for t in thresholds:
                covers[t].append((draw >= t).mean(axis=1))
        _put(summary.ci95, "mean", np.concatenate(means))
        for t in thresholds:
            _put(summary.ci95, f"coverage@{_threshold_key(t)}", np.concatenate(covers[t]))
    return summary


def _put(out: dict[str, tuple[float, float]], name: str, draws: np.ndarray) -> None:
    """Record the interval unless the bootstrap is degenerate (every draw the same value, e.g. identical scores)."""
    lo, hi = _interval(draws)
    if hi > lo:
        out[name] = (lo, hi)


def _interval(draws: np.ndarray) -> tuple[float, float]:
    import numpy as np

    lo, hi = np.percentile(draws, [2.5, 97.5])
    return float(lo), float(hi)


def per_prompt(rows: Iterable[tuple[str, float]]) -> tuple[list[float], list[float]]:
    """From (example_id, score) rows with K samples per prompt: the per-prompt mean and the best-of-K score."""
    groups: dict[str, list[float]] = defaultdict(list)
    for key, value in rows:
        if value is not None:
            groups[key].append(value)
    means = [sum(v) / len(v) for v in groups.values()]
    best = [float(max(v)) for v in groups.values()]
    return means, best


class TargetCheck(BaseModel):
    key: str
    """`metric.stat`, e.g. precision.mean or precision.coverage@50."""
    required: float
    actual: float | None
    passed: bool
    gap: float | None = None
    """actual - required (negative: short by that much)."""


class TargetVerdict(BaseModel):
    passed: bool
    checks: list[TargetCheck] = Field(default_factory=list)
    explanation: str


def parse_target_key(key: str) -> tuple[str, str]:
    match = _TARGET_KEY.match(key)
    if not match:
        raise ConfigError(
            f"evaluate.target key {key!r} is not `metric.stat`",
            "Write e.g. precision.mean, similarity.median or precision.coverage@50",
        )
    return match.group("metric"), match.group("stat")


def check_target(target: dict[str, float], summaries: dict[str, Summary]) -> TargetVerdict:
    """Evaluate every `metric.stat >= value` rule and explain which missed and by how much."""
    checks: list[TargetCheck] = []
    for key, required in target.items():
        metric, stat = parse_target_key(key)
        summary = summaries.get(metric)
        actual = summary.stat(stat) if summary is not None and summary.n else None
        passed = actual is not None and actual >= required
        checks.append(TargetCheck(key=key, required=required, actual=actual, passed=passed,
                                  gap=None if actual is None else actual - required))
    parts = []
    for c in checks:
        if c.actual is None:
            parts.append(f"{c.key} was not measured (needs >= {c.required:g})")
        elif c.passed:
            parts.append(f"{c.key} = {_fmt(c.actual)} >= {c.required:g}")
        else:
            parts.append(f"{c.key} = {_fmt(c.actual)} < {c.required:g} (short by {_fmt(-(c.gap or 0))})")
    passed = all(c.passed for c in checks)
    head = "target met" if passed else "target missed"
    return TargetVerdict(passed=passed, checks=checks, explanation=f"{head}: " + "; ".join(parts) if parts else "no target set")


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"
