"""What a loop step's result is worth: results that measured nothing, and the spend each iteration bought.

An evaluation whose judgments mostly failed, or a synthetic round whose every call failed, measured nothing; used
anyway, it would steer the loop (train again, pick a best model) on noise. The run stops with the cause and the fix,
and `status`, the report and the demo show the result as not measured. Spend is read from the service ledger only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llamaduo.atomic import read_jsonl
from llamaduo.errors import LlamaduoError
from llamaduo.loop.state import IterationRecord, MetricSummary
from llamaduo.report.spend import SpendRow, spend_by_stage

JUDGED = ("similarity", "precision", "pairwise")

# Failure texts of a service that cannot be reached at all (see service/providers/stainless.py).
_UNREACHABLE = ("could not connect", "connection failed")
RERUN = "then rerun the same command: finished steps are kept and the failed calls are asked again"


class NotMeasured(LlamaduoError):
    """A step's result is void, so the run stopped before using it; `state` is the run's saved LoopState."""

    state: Any = None


def void_evaluation(config: Any, report: dict[str, Any], judgments: Path, iteration: int) -> NotMeasured | None:
    """The reason an evaluation measured nothing: failed judgments above `loop.max_failed_judgments`, or a judge that is down."""
    failures = report.get("failures") or {}
    failed, total = int(failures.get("judgments") or 0), int(failures.get("total_judgments") or 0)
    limit = config.loop.max_failed_judgments
    if not failed:
        return None
    where = "the base model (iteration 0)" if iteration == 0 else f"iteration {iteration}"
    # A judge that is down voids the evaluation whatever the limit: nothing was judged at all.
    down = unreachable_judges(config, judgments) if failed == total else None
    if down:
        return NotMeasured(f"not measured: {down} could not be reached, so all {total} judgments of {where} failed",
                           f"Start the judge's server or fix its base_url (`llamaduo config check` tests it), {RERUN}.")
    if failed / total <= limit:
        return None
    reasons = ", ".join(f"{kind}: {n}" for kind, n in (failures.get("by_reason") or {}).items())
    return NotMeasured(
        f"not measured: {failed} of {total} judgments of {where} failed ({reasons}), above loop.max_failed_judgments={limit:g}",
        f"See {judgments} for the errors and fix the judge (`llamaduo config check` tests it), {RERUN}.",
    )


def unreachable_judges(config: Any, judgments: Path) -> str | None:
    """`judge0 (openai/gpt-4o at URL)` when every failed judgment is a refused or dropped connection, else None."""
    rows = [r for r in read_jsonl(judgments) if not r.get("ok")]
    if not rows or not all(any(t in str(r.get("error") or "").lower() for t in _UNREACHABLE) for r in rows):
        return None
    shown = []
    for index in sorted({int(r.get("judge") or 0) for r in rows}):
        model = config.service.judge[index] if index < len(config.service.judge) else None
        where = f" at {model.base_url}" if model is not None and model.base_url else ""
        shown.append(f"judge{index} ({model.provider}/{model.model}{where})" if model is not None else f"judge{index}")
    return " and ".join(shown)


def void_synthesis(report: dict[str, Any], iteration: int) -> NotMeasured | None:
    """The reason a synthetic round bought nothing: every generator call failed (not merely every pair filtered)."""
    calls = int(report.get("calls") or 0)
    invalid = (report.get("gate_report") or {}).get("invalid_replies") or {}
    if not calls or report.get("accepted") or sum(invalid.values()) < calls:
        return None
    reasons = ", ".join(f"{kind}: {n}" for kind, n in invalid.items())
    return NotMeasured(f"not measured: all {calls} generator calls of the synthetic round for iteration {iteration} failed ({reasons})",
                       f"Check the generator with `llamaduo config check`, {RERUN}.")


# ---- records and stop rules ---------------------------------------------------------------------


def record_from_report(k: int, report: dict[str, Any], void: NotMeasured | None = None, target_keys: Any = ()) -> IterationRecord:
    """Flatten an EvalReport into `metric.stat` summaries with their bootstrap CIs (none where unavailable).

    A void evaluation keeps its judge-free metrics; its judged ones (and the target's) are listed without values.
    """
    record = IterationRecord(iteration=k)
    target = report.get("target") or {}
    record.target_met = bool(target.get("passed"))
    record.target_explanation = target.get("explanation", "")
    for name, view in (report.get("metrics") or {}).items():
        summary = view.get("per_sample") or {}
        ci = summary.get("ci95") or {}
        lo, hi = ci.get("mean", (None, None))
        entry = {f"{name}.mean": MetricSummary(mean=summary.get("mean"), ci_low=lo, ci_high=hi)}
        for t, share in (summary.get("coverage") or {}).items():
            clo, chi = ci.get(f"coverage@{t}", (None, None))
            entry[f"{name}.coverage@{t}"] = MetricSummary(mean=share, ci_low=clo, ci_high=chi)
        target_map = record.metrics if name in JUDGED else record.judge_free
        target_map.update(entry)
    if void is not None:
        keys = set(record.metrics) | {key for key in target_keys if key.split(".", 1)[0] in JUDGED}
        record.metrics = {key: MetricSummary() for key in sorted(keys)}
        record.not_measured = record.target_explanation = void.problem
        record.target_met = False
    return record


def value(record: IterationRecord, metric: str) -> float | None:
    found = record.metrics.get(metric) or record.judge_free.get(metric)
    return found.mean if found else None


def plateaued(records: list[IterationRecord], metric: str, patience: int) -> bool:
    """True when each of the last `patience` iterations has a measured CI whose lower bound does not beat the best
    earlier mean. An iteration without a mean or a CI is no evidence of a plateau, so it never ends the run."""
    if len(records) <= patience:
        return False
    best_before = max((v for r in records[:-patience] if (v := value(r, metric)) is not None), default=None)
    if best_before is None:
        return False
    recent = [(r.metrics.get(metric) or r.judge_free.get(metric)) for r in records[-patience:]]
    return all(m is not None and m.mean is not None and m.ci_low is not None and m.ci_low <= best_before for m in recent)


def project_spend(config: Any) -> float:
    """Everything the project's ledger holds (the budget caps a project, shared by its runs)."""
    from llamaduo.service.cache import ServiceStore

    path = config.path(config.service.cache_path)
    if not path.is_file():
        return 0.0
    store = ServiceStore(path)
    try:
        return float(store.total_cost())
    finally:
        store.close()


# ---- spend, from the ledger ----------------------------------------------------------------------


def spend_rows(config: Any, run_id: str) -> list[SpendRow]:
    return spend_by_stage(config.path(config.service.cache_path), run_id)


def group_spend(rows: list[SpendRow], by: str) -> dict[str, dict[str, Any]]:
    """Ledger rows summed per stage, role or model: dollars, tokens, requests and unpriced requests."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        key = str(getattr(r, by) or "-")
        into = out.setdefault(key, {by: key, "cost_usd": 0.0, "input_tokens": 0, "output_tokens": 0, "requests": 0,
                                    "cache_hits": 0, "unpriced_requests": 0})
        into["cost_usd"] += r.cost_usd
        for name in ("input_tokens", "output_tokens", "requests", "cache_hits", "unpriced_requests"):
            into[name] += getattr(r, name)
    return out


def iteration_spend(rows: list[SpendRow]) -> dict[int | None, tuple[float, int]]:
    """Iteration -> (dollars, unpriced paid requests); None holds the run's spend outside any iteration."""
    out: dict[int | None, tuple[float, int]] = {}
    for r in rows:
        usd, unpriced = out.get(r.iteration, (0.0, 0))
        out[r.iteration] = (usd + r.cost_usd, unpriced + r.unpriced_requests)
    return out


def unpriced_requests(rows: list[SpendRow]) -> int:
    return sum(r.unpriced_requests for r in rows)
