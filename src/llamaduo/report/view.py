"""What a report shows, as plain rows: the HTML and Markdown writers only lay these out.

Model text stays plain strings here; escaping is the template's job (autoescape), so nothing is escaped twice.
"""

from __future__ import annotations

from typing import Any

from llamaduo.report.loader import RunData, StageData
from llamaduo.report.spend import SpendRow, usd

NOT_MEASURED = "not measured"


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def stage_metrics(stage: StageData) -> dict[str, tuple[float | None, float | None, float | None]]:
    """metric.stat -> (value, ci low, ci high), from the loop's record or else the eval report (no CI where unavailable)."""
    out: dict[str, tuple[float | None, float | None, float | None]] = {}
    if stage.record:
        for key, s in stage.record.metrics.items():
            out[key] = (s.mean, s.ci_low, s.ci_high)
    if not out and stage.eval:
        for name, view in stage.eval.metrics.items():
            lo, hi = view.per_sample.ci95.get("mean", (None, None))
            out[f"{name}.mean"] = (view.per_sample.mean, lo, hi)
    if stage.record:
        # Tool-call metrics are judge-free, but they are what a tool-calling task is judged by: shown beside the judges'.
        out |= {k: (s.mean, s.ci_low, s.ci_high) for k, s in stage.record.judge_free.items() if k.startswith("tool_") and k.endswith(".mean")}
    return out


def metrics_table(run: RunData, spend: list[SpendRow]) -> dict[str, Any]:
    """The per-iteration table: one row per evaluated model, one column per metric (mean and 95% CI).

    Its spend column is the ledger's per iteration: the synthetic data an iteration trained on and its evaluation.
    """
    per_iteration: dict[int | None, tuple[float, int]] = {}
    for r in spend:
        dollars, unpriced = per_iteration.get(r.iteration, (0.0, 0))
        per_iteration[r.iteration] = (dollars + r.cost_usd, unpriced + r.unpriced_requests)
    stages = ([run.baseline] if run.baseline else []) + run.iterations
    per_stage = [stage_metrics(s) for s in stages]
    if run.baseline and not per_stage[0] and run.state and run.state.baseline:
        per_stage[0] = {k: (s.mean, s.ci_low, s.ci_high) for k, s in run.state.baseline.items()}
    columns = sorted({k for m in per_stage for k in m})
    rows = []
    for stage, metrics in zip(stages, per_stage, strict=True):
        rec = stage.record
        void = rec is not None and rec.not_measured is not None
        target = rec.target_met if rec else (stage.eval.target.passed if stage.eval else None)
        explanation = rec.target_explanation if rec and rec.target_explanation else (stage.eval.target.explanation if stage.eval else "")
        cells = []
        for col in columns:
            value, lo, hi = metrics.get(col, (None, None, None))
            ci = f"[{_fmt(lo)}, {_fmt(hi)}]" if lo is not None and hi is not None and lo != hi else ""
            cells.append({"value": NOT_MEASURED if void and value is None and col in metrics else _fmt(value), "ci": ci})
        rows.append({
            "label": stage.label,
            "best": run.state is not None and not stage.is_baseline and run.state.best_iteration == stage.index,
            "train_size": rec.train_size if rec and not stage.is_baseline else "",
            "synthetic_added": rec.synthetic_added if rec and not stage.is_baseline else "",
            "synthetic_total": rec.synthetic_total if rec and not stage.is_baseline else "",
            "cells": cells,
            "target": NOT_MEASURED if void else "n/a" if stage.is_baseline else ("met" if target else ("missed" if target is not None else "–")),
            "explanation": explanation,
            "spend": usd(*per_iteration[stage.index]) if stage.index in per_iteration else ("0.0000" if stage.index is not None else ""),
            "seconds": f"{rec.seconds:.0f}" if rec else "",
        })
    return {"columns": columns, "rows": rows}


def failures(stage: StageData) -> dict[str, Any] | None:
    if stage.eval is None:
        return None
    f = stage.eval.failures
    return {"label": stage.label, "judgments": f.judgments, "total": f.total_judgments, "by_reason": f.by_reason,
            "unscored": f.unscored_answers, "sandbox": f.sandbox, "examples": f.examples, "warnings": stage.eval.warnings}


def trust_rows(stage: StageData) -> list[dict[str, Any]]:
    """Judge-check figures (agreement with human labels) of every judge and judge-free scorer of this evaluation."""
    rows = []
    if stage.eval:
        for judge in stage.eval.judges:
            rows.append({"scorer": judge.label, "figures": _flat(judge.trust) if judge.trust else {}})
        for name, trust in stage.eval.offline_trust.items():
            rows.append({"scorer": name, "figures": _flat(trust)})
    return rows


def _flat(value: Any, prefix: str = "", depth: int = 0) -> dict[str, str]:
    """Nested figures as `a.b -> value` lines; long lists are summarised, since a report row must stay readable."""
    out: dict[str, str] = {}
    if isinstance(value, dict) and depth < 4:
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}.{key}" if prefix else str(key), depth + 1))
    elif isinstance(value, list):
        if all(isinstance(v, int | float | str) for v in value) and len(value) <= 8:
            out[prefix] = ", ".join(_scalar(v) for v in value)
        else:
            out[prefix] = f"{len(value)} items"
    else:
        out[prefix or "value"] = _scalar(value)
    return out


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 300 else text[:300] + "…"


def gate_report(stage: StageData) -> dict[str, str] | None:
    """The synthetic-data report of this iteration (pairs asked, accepted, dropped by each gate, decontamination hits)."""
    if not stage.synth:
        return None
    # cost_usd: the round's own count of its generator calls; spend is shown once, from the ledger (quality gate included).
    hidden = ("examples", "pairs", "accepted_pairs", "rows", "gate_report", "run_id", "cost_usd")
    shown = {k: v for k, v in stage.synth.items() if k not in hidden}
    rows = _flat(shown)
    gates = stage.synth.get("gate_report")
    if isinstance(gates, dict):
        for gate in gates.get("gates") or []:
            if not isinstance(gate, dict):
                continue
            dropped = gate.get("dropped") or {}
            total = sum(v for v in dropped.values() if isinstance(v, int | float))
            why = ", ".join(f"{reason}: {n}" for reason, n in dropped.items())
            rows[f"gate {gate.get('gate')}"] = f"checked {gate.get('checked', 0)}, passed {gate.get('passed', 0)}, dropped {total}" + (f" ({why})" if why else "")
            if "decontam" in str(gate.get("gate")):
                rows["decontamination hits"] = str(total)
        for reason, n in (gates.get("invalid_replies") or {}).items():
            rows[f"invalid generator replies: {reason}"] = str(n)
    return rows


def gate_label(stage: StageData) -> str:
    """Synthesis runs after an evaluation misses the target; iteration 0's round tops train up to loop.min_train."""
    return "before iteration 1 (top-up)" if stage.is_baseline else f"after {stage.label} (used from iteration {stage.index + 1})"


def spend_rows(rows: list[SpendRow]) -> list[dict[str, Any]]:
    return [{**r.model_dump(), "iteration": "–" if r.iteration is None else r.iteration, "cost": usd(r.cost_usd, r.unpriced_requests)} for r in rows]


def samples(stage: StageData, limit: int) -> list[dict[str, Any]]:
    """Side-by-side rows spread over the score range (worst to best), so both failures and successes show."""
    if limit <= 0 or not stage.answers:
        return []
    scores = {(s.example_id, s.sample): s for s in stage.scores}
    reasons: dict[tuple[str, int], list[str]] = {}
    for j in stage.judgments:
        if j.ok:
            for metric, reason in j.reasons.items():
                reasons.setdefault((j.example_id, j.sample), []).append(f"judge{j.judge} {metric}: {reason}")
    metric = next((m for m in ("precision", "similarity", "pairwise") if any(m in s.scores for s in scores.values())), None)

    def key(answer: Any) -> float:
        row = scores.get((answer.example_id, answer.sample))
        value = row.scores.get(metric) if row and metric else None
        return -1.0 if value is None else value

    ordered = sorted(stage.answers, key=lambda a: (key(a), a.example_id, a.sample))
    if len(ordered) > limit:
        step = (len(ordered) - 1) / max(limit - 1, 1)
        ordered = [ordered[round(i * step)] for i in range(limit)]
    out = []
    for a in ordered:
        row = scores.get((a.example_id, a.sample))
        out.append({
            "id": f"{a.example_id}#{a.sample}", "task": a.task,
            "instruction": next((m.content for m in reversed(a.messages) if m.role == "user"), ""),
            "reference": a.reference or "", "answer": a.text, "finish": a.finish_reason,
            "scores": {m: _fmt(v) for m, v in row.scores.items()} if row else {},
            "reasons": reasons.get((a.example_id, a.sample), [])[:6],
        })
    return out


def focus_stage(run: RunData) -> StageData | None:
    """The iteration whose samples a report shows: the best one, else the latest evaluated."""
    if run.state and run.state.best_iteration is not None:
        best = next((it for it in run.iterations if it.index == run.state.best_iteration), None)
        if best is not None and best.answers:
            return best
    evaluated = [it for it in run.iterations if it.answers]
    return evaluated[-1] if evaluated else run.baseline
