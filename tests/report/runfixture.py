"""Writes realistic run folders with the stages' real records (the loop that writes them for real is built separately)."""

from __future__ import annotations

import json
import random

import yaml
from pathlib import Path

from llamaduo.atomic import atomic_write_json, atomic_write_text
from llamaduo.config import load_config
from llamaduo.evaluate.aggregate import TargetCheck, TargetVerdict, summarize
from llamaduo.evaluate.judge import Judgment
from llamaduo.evaluate.report import EvalReport, Failures, ItemScores, JudgeInfo, MetricView
from llamaduo.loop.state import IterationRecord, LoopState, MetricSummary
from llamaduo.records import Answer, Message
from llamaduo.runs import RunFolder
from llamaduo.service.cache import ServiceStore
from llamaduo.synth.engine import SynthReport
from llamaduo.synth.gates import GateReport

XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = '<img src=x onerror="alert(2)">'


def project_config(tmp: Path, **overrides: object):
    """Write `tmp/llamaduo.yaml` (so the CLI run from `tmp` sees the same settings) and load it."""
    data: dict = {"report": {"samples": 6}}
    for key, value in overrides.items():
        section, field = key.split("__")
        data.setdefault(section, {})[field] = value
    atomic_write_text(tmp / "llamaduo.yaml", yaml.safe_dump(data))
    return load_config(tmp / "llamaduo.yaml")


def _eval_stage(folder: Path, run_id: str, iteration: int, quality: float, n: int, rng: random.Random) -> tuple[EvalReport, dict]:
    answers, rows, judgments = [], [], []
    for i in range(n):
        eid = f"ex{i:03d}"
        text = XSS_SCRIPT if i == 0 else (XSS_IMG if i == 1 else f"Answer {i} of iteration {iteration}: the capital is Paris & more.")
        answers.append(Answer(example_id=eid, task="closed_qa", messages=[Message(role="user", content=f"Question {i}? <b>bold</b>")],
                              reference=f"Reference answer {i}", text=text, model="tiny", prompt_tokens=20, completion_tokens=12))
        per_judge = {}
        for j in range(2):
            sim = max(0.0, min(100.0, rng.gauss(quality, 15)))
            prec = max(0.0, min(100.0, sim + rng.gauss(0, 8)))
            per_judge[f"judge{j}"] = {"similarity": sim, "precision": prec}
            judgments.append(Judgment(example_id=eid, task="closed_qa", sample=0, judge=j, judge_model=f"gpt-4o-mini-{j}", repeat=0, ok=True,
                                      scores={"similarity": sim, "precision": prec},
                                      reasons={"precision": f"judge {j} says {XSS_SCRIPT} is mostly right"}))
        judgments.append(Judgment(example_id=eid, task="closed_qa", sample=0, judge=0, judge_model="gpt-4o-mini-0", repeat=1,
                                  ok=False, error="reply was not valid JSON")) if i % 7 == 0 else None
        scores = {m: sum(v[m] for v in per_judge.values()) / 2 for m in ("similarity", "precision")}
        scores["rouge_l"] = rng.uniform(10, 60)
        rows.append(ItemScores(example_id=eid, task="closed_qa", sample=0, scores=scores, per_judge=per_judge))
    views = {m: MetricView(per_sample=summarize([r.scores[m] for r in rows], [50], resamples=200)) for m in ("similarity", "precision", "rouge_l")}
    actual = views["precision"].per_sample.mean
    verdict = TargetVerdict(passed=actual >= 70, checks=[TargetCheck(key="precision.mean", required=70, actual=actual, passed=actual >= 70, gap=actual - 70)],
                            explanation=f"target {'met' if actual >= 70 else 'missed'}: precision.mean = {actual:.1f} vs 70")
    failed = [j for j in judgments if not j.ok]
    report = EvalReport(
        run_id=run_id, iteration=iteration, mode="pointwise", rubric="pointwise@abc", repeats=2, answers=n, prompts=n, samples_per_prompt=1,
        judges=[JudgeInfo(label="judge0: openai/gpt-4o-mini", index=0, provider="openai", model="gpt-4o-mini",
                          trust={"precision": {"spearman": 0.81, "kappa": 0.62, "n": 40}}),
                JudgeInfo(label="judge1: anthropic/claude-3-5-haiku", index=1, provider="anthropic", model="claude-3-5-haiku", trust=None)],
        metrics=views, failures=Failures(judgments=len(failed), total_judgments=len(judgments), by_reason={"not JSON": len(failed)},
                                         examples=[f"ex000#0 judge0 repeat 1: {XSS_SCRIPT}"]),
        target=verdict, cost_usd=0.012 * n,
    )
    name = f"iter-{iteration}"
    atomic_write_text(folder / name / "answers.jsonl", "".join(a.model_dump_json() + "\n" for a in answers))
    eval_dir = folder / "eval" / name
    atomic_write_text(eval_dir / "scores.jsonl", "".join(r.model_dump_json() + "\n" for r in rows))
    atomic_write_text(eval_dir / "judgments.jsonl", "".join(j.model_dump_json() + "\n" for j in judgments))
    atomic_write_text(eval_dir / "report.json", report.model_dump_json(indent=2))
    summaries = {f"{m}.mean": MetricSummary(mean=v.per_sample.mean, ci_low=v.per_sample.ci95["mean"][0], ci_high=v.per_sample.ci95["mean"][1])
                 for m, v in views.items()}
    return report, summaries


def make_run(config, run_id: str = "demo-run", *, iterations: int = 3, status: str = "done", n: int = 14, seed: int = 0,
             quality_start: float = 50.0) -> Path:
    """A run laid out as the loop writes it: iter-0 is the untrained base model, iterations 1..N are trained,
    iter-k/synth/ holds the synthetic round that follows a missed target, with loss logs and ledger rows."""
    rng = random.Random(seed)
    runs_dir = config.path(config.project.runs_dir)
    run = RunFolder.create(runs_dir, config, run_id=run_id, seeds={"project": 42})
    state = LoopState(run_id=run_id, config_hash="cafe", status="running", stage="evaluate")
    base_report, base = _eval_stage(run.root, run_id, 0, 30.0, n, rng)
    state.baseline = base
    state.iterations.append(IterationRecord(iteration=0, metrics=base, target_met=False, target_explanation=base_report.target.explanation,
                                            seconds=20.0))
    run.event("infer_finished", iteration=0, answers=n, tokens_per_s=21.5)
    synthetic_total, added = 0, 0
    for k in range(1, iterations + 1):
        synthetic_total += added
        report, summaries = _eval_stage(run.root, run_id, k, quality_start + 12 * (k - 1), n, rng)
        history = [{"step": s, "loss": 2.5 * (0.9 ** (s / 5)) / k + 0.3, "epoch": s / 20} for s in range(1, 41, 2)]
        if k % 2:  # the trainer's own log history
            atomic_write_json(run.root / f"iter-{k}" / "train" / "checkpoint-40" / "trainer_state.json", {"global_step": 40, "log_history": history})
        else:  # the loop's metrics.jsonl (RunMetrics callback)
            atomic_write_text(run.root / f"iter-{k}" / "train" / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
        state.iterations.append(IterationRecord(
            iteration=k, train_size=200 + synthetic_total, synthetic_added=added, synthetic_total=synthetic_total, metrics=summaries,
            target_met=report.target.passed, target_explanation=report.target.explanation, seconds=60.0 + k,
            model_dir=str(run.root / f"iter-{k}" / "train" / "model")))
        run.event("evaluated", iteration=k, target_passed=report.target.passed)
        if k < iterations:
            added = 100 * 2 ** (k - 1)
            gates = GateReport()
            for gate, dropped in (("schema_length_language", {"too long": 2, "not English": 1}), ("near_dedup", {"near duplicate": 7}),
                                  ("decontamination", {"overlaps the test split": 3})):
                entry = next((g for g in gates.gates if g.gate == gate), None)
                if entry is not None:
                    entry.checked, entry.passed, entry.dropped = added + 20, added + 20 - sum(dropped.values()), dropped
            gates.invalid_replies = {"not JSON": 2}
            synth = SynthReport(run_id=run_id, target=added, accepted=added, accepted_by_task={"closed_qa": added}, calls=added // 5 + 3,
                                pairs_generated=added + 30, cost_usd=0.05 * added / 100, stop_reason="target_reached", gate_report=gates)
            atomic_write_json(run.root / f"iter-{k}" / "synth" / "report.json", synth.model_dump(mode="json"))
    trained = state.iterations[1:]
    state.best_iteration = max(trained, key=lambda r: r.metrics["precision.mean"].mean).iteration if trained else None
    state.iteration = iterations
    state.status = status
    state.stop_reason = "target_met" if status == "done" else None
    state.save(run.root)
    store = ServiceStore(config.path(config.service.cache_path))
    try:
        # Spend is booked to the iteration it bought: its evaluation, and the synthetic round it trained on.
        for iteration, stage, role, model, tokens_in, tokens_out, cost in (
            (2, "synth", "generator", "gpt-4o", 120_000, 60_000, 0.9),
            (0, "evaluate", "judge", "gpt-4o-mini", 300_000, 20_000, 0.057),
            (1, "evaluate", "judge", "claude-3-5-haiku", 280_000, 18_000, 0.296),
        ):
            store.add_ledger({"run_id": run_id, "iteration": iteration, "stage": stage, "role": role, "provider": "x", "model": model,
                              "input_tokens": tokens_in, "output_tokens": tokens_out, "cost_usd": cost, "requests": 50})
        store.add_ledger({"run_id": "other-run", "stage": "synth", "role": "generator", "model": "gpt-4o", "cost_usd": 99.0})
    finally:
        store.close()
    return run.root


def corrupt(path: Path) -> None:
    path.write_text(json.dumps({"half": "of a file"})[:9], encoding="utf-8")
