"""`evaluate(config, answers)`: judge and score a model's answers, aggregate, check the target, and persist the report."""

from __future__ import annotations

import hashlib
import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from llamaduo.atomic import atomic_write_text
from llamaduo.errors import LlamaduoError
from llamaduo.evaluate.aggregate import Summary, check_target, parse_target_key, per_prompt, summarize
from llamaduo.evaluate.judge import Judgment, failure_kind, pair_verdict
from llamaduo.evaluate.metrics import get_metric
from llamaduo.evaluate.offline import Item, reference_scores, run_pass_at_k, tool_scores
from llamaduo.evaluate.report import EvalReport, Failures, ItemScores, JudgeInfo, MetricView, PairwiseSummary
from llamaduo.records import Answer, Example

_OUTCOME_SCORE = {"win": 100.0, "tie": 50.0, "loss": 0.0}
_TEST_KEYS = ("test_list", "test_setup_code", "test", "entry_point", "prompt")


def evaluate(
    config: Any,
    answers: Iterable[Answer],
    run: Any = None,
    iteration: int = 0,
    *,
    examples: Iterable[Example] | None = None,
) -> EvalReport:
    """Score `answers` (rows written by infer) with the judges and the judge-free metrics; persist into `run`.

    `examples` supplies references, instructions and unit tests by id where the answers lack them (default: the
    dataset store's test split, when there is one).
    """
    ec = config.evaluate
    items, metrics, rubric = check_inputs(config, answers, examples)
    if run is not None and getattr(run, "iteration", None) != iteration:
        run = _AtIteration(run, iteration)
    answers = [it.answer for it in items]
    judging = rubric is not None
    rows = [ItemScores(example_id=it.answer.example_id, task=it.answer.task, sample=it.answer.sample) for it in items]
    report_parts: dict[str, Any] = {"warnings": [], "judges": [], "cost_usd": 0.0}
    judgments: list[Judgment] = []
    if judging:
        from llamaduo.evaluate.ensemble import judge_all

        judged = judged_items(items, ec.judge_sample)
        if len(judged) < len(items):
            report_parts["judged_prompts"] = len({it.answer.example_id for it in judged})
        judgments, cost = judge_all(config, judged, rubric, run, iteration)
        report_parts["cost_usd"] = cost
        report_parts["judges"] = _judge_infos(config)
        report_parts["warnings"] += _self_preference(config, answers)
        _apply_judgments(rows, judgments, ec.mode, ec.ensemble)
    for metric in metrics:
        if metric.needs in ("reference", "tool_calls"):
            values = reference_scores(items, metric) if metric.needs == "reference" else tool_scores(items, metric)
            for row, value in zip(rows, values, strict=True):
                if value is not None:
                    row.scores[metric.name] = value
    passk = run_pass_at_k(items, ec) if any(m.name == "pass_at_k" for m in metrics) else None
    report = _report(config, items, rows, judgments, passk, rubric, iteration, run, report_parts)
    if run is not None:
        _persist(run, iteration, rows, judgments, report)
    return report


def judged_items(items: list[Item], sample: int | None) -> list[Item]:
    """The items of `sample` prompts (all K answers of each), picked by a hash of the example id: the same prompts at
    every iteration and on every machine, so judged means of different iterations compare like with like."""
    ids = {it.answer.example_id for it in items}
    if sample is None or sample >= len(ids):
        return items
    chosen = set(sorted(ids, key=lambda i: hashlib.sha256(i.encode()).hexdigest())[:sample])
    return [it for it in items if it.answer.example_id in chosen]


class _AtIteration:
    """A run folder whose service calls are booked to `iteration` in the ledger (spend per iteration reads it)."""

    def __init__(self, run: Any, iteration: int):
        self._run, self.iteration = run, iteration

    def __getattr__(self, name: str) -> Any:
        return getattr(self._run, name)


def forget_failed_judgments(run: Any, iteration: int) -> int:
    """Drop the failed judgments from an evaluation's journal, so that evaluating again asks for them again.

    The journal keeps failures too (a resumed evaluation should not pay twice for a reply that will fail the same
    way); when a whole evaluation is void, e.g. its judge was down, they are exactly what must be asked again.
    Returns how many were dropped.
    """
    from llamaduo.atomic import read_jsonl

    journal = run.path(f"eval/iter-{iteration}/journal.jsonl")
    if not journal.is_file():
        return 0
    rows = read_jsonl(journal)
    kept = [r for r in rows if (r.get("judgment") or {}).get("ok")]
    atomic_write_text(journal, "".join(json.dumps(r) + "\n" for r in kept))
    return len(rows) - len(kept)


def check_inputs(config: Any, answers: Iterable[Answer], examples: Iterable[Example] | None = None) -> tuple[list[Item], list[Any], Any]:
    """Validate everything a user can get wrong before any paid call or file write; returns (items, metrics, rubric)."""
    ec = config.evaluate
    answers = list(answers)
    if not answers:
        raise LlamaduoError("there are no answers to evaluate", "Run `llamaduo infer` first, or pass an answers file with rows")
    seen = Counter((a.example_id, a.sample) for a in answers)
    if (dup := next((key for key, count in seen.items() if count > 1), None)) is not None:
        raise LlamaduoError(f"answer {dup[0]} sample {dup[1]} appears more than once", "Give each (example_id, sample) one row")
    metrics = [get_metric(name) for name in ec.metrics]
    for key in ec.target:
        parse_target_key(key)
    items = _items(config, answers, examples)
    judging = ec.judge and bool(config.service.judge)
    _check_references(items, judging, metrics)
    rubric = None
    if judging:
        from llamaduo.evaluate.rubric import load_rubric

        rubric = load_rubric(ec.mode, path=config.path(ec.rubric) if ec.rubric else None, version=ec.rubric_version)
    return items, metrics, rubric


def _items(config: Any, answers: list[Answer], examples: Iterable[Example] | None) -> list[Item]:
    by_id = {e.id: e for e in (examples if examples is not None else _store_examples(config))}
    items = []
    for a in answers:
        ex = by_id.get(a.example_id)
        reference = a.reference if a.reference is not None else (ex.reference if ex else None)
        instruction = next((m.content for m in reversed(a.messages) if m.role == "user"), "") or (ex.instruction if ex else "")
        meta = {**(ex.metadata if ex else {}), **a.metadata}
        tests = {k: meta[k] for k in _TEST_KEYS if meta.get(k)}
        # The tools offered and the reference's calls come from the example (the test split) the answer replies to.
        items.append(Item(a, instruction, reference, tests if ("test_list" in tests or "test" in tests) else {},
                          ex.tools if ex else None, ex.reference_tool_calls if ex else None))
    return items


def _store_examples(config: Any) -> list[Example]:
    store_dir = config.path(config.data.store)
    if not store_dir.exists():
        return []
    from llamaduo.data.store import DatasetStore

    return DatasetStore(store_dir).examples("test")


def _check_references(items: list[Item], judging: bool, metrics: list[Any]) -> None:
    needs_reference = judging or any(m.needs == "reference" for m in metrics)
    missing = [it for it in items if it.reference is None and (judging or not it.tests)]
    if needs_reference and missing:
        raise LlamaduoError(
            f"{len(missing)} of {len(items)} answers have no reference answer (first: example {missing[0].answer.example_id})",
            "Evaluate answers to the test split (infer copies its references), or add `reference` to each row",
        )


def _judge_infos(config: Any) -> list[JudgeInfo]:
    from llamaduo.evaluate.calibration import load_trust

    infos = []
    for i, judge in enumerate(config.service.judge):
        label = f"judge{i}: {judge.provider}/{judge.model}"
        infos.append(JudgeInfo(label=label, index=i, provider=judge.provider, model=judge.model, trust=load_trust(config, judge_label(judge))))
    return infos


def judge_label(judge: Any) -> str:
    return f"{judge.provider}/{judge.model}"


def _self_preference(config: Any, answers: list[Answer]) -> list[str]:
    """LLM judges favour text they wrote: warn when a judge model also generated the training data."""
    generator = config.service.generator.model
    out = []
    for i, judge in enumerate(config.service.judge):
        if judge.model == generator:
            out.append(f"judge{i} ({judge.model}) is also the generator of the synthetic data: self-preference may inflate its scores; "
                       "add a judge from another model family")
        if any(a.model == judge.model for a in answers):
            out.append(f"judge{i} ({judge.model}) judges answers it wrote itself: self-preference")
    return out


def _apply_judgments(rows: list[ItemScores], judgments: list[Judgment], mode: str, how: str) -> None:
    """Per answer: each judge's mean over its successful repeats, then the ensemble across judges and its spread."""
    index = {(r.example_id, r.sample): r for r in rows}
    grouped: dict[tuple[str, int, int], list[Judgment]] = defaultdict(list)
    for j in judgments:
        grouped[(j.example_id, j.sample, j.judge)].append(j)
    for (example_id, sample, judge), group in grouped.items():
        row = index[(example_id, sample)]
        row.failed_judgments += sum(not j.ok for j in group)
        label = f"judge{judge}"
        if mode == "pairwise":
            outcome, flipped = pair_verdict(group)
            if outcome is not None:
                row.per_judge[label] = {"pairwise": _OUTCOME_SCORE[outcome], "flipped": float(bool(flipped)) if flipped is not None else -1.0}
            continue
        means = {}
        for metric in ("similarity", "precision"):
            values = [j.scores[metric] for j in group if j.ok and metric in j.scores]
            if values:
                means[metric] = statistics.fmean(values)
        if means:
            row.per_judge[label] = means
    combine = statistics.median if how == "median" else statistics.fmean
    metrics = ("pairwise",) if mode == "pairwise" else ("similarity", "precision")
    for row in rows:
        for metric in metrics:
            values = [scores[metric] for scores in row.per_judge.values() if metric in scores]
            row.scores[metric] = combine(values) if values else None
            if len(values) > 1:
                row.spread[metric] = max(values) - min(values)


def _report(config: Any, items: list[Item], rows: list[ItemScores], judgments: list[Judgment], passk: Any, rubric: Any,
            iteration: int, run: Any, parts: dict[str, Any]) -> EvalReport:
    ec = config.evaluate
    summ = lambda values: summarize(values, ec.thresholds, resamples=ec.bootstrap, seed=ec.seed)  # noqa: E731
    k = max(Counter(r.example_id for r in rows).values())
    names = sorted({m for r in rows for m, v in r.scores.items() if v is not None})
    views: dict[str, MetricView] = {}
    for name in names:
        pairs = [(r.example_id, r.scores[name]) for r in rows if r.scores.get(name) is not None]
        view = MetricView(per_sample=summ([v for _, v in pairs]))
        if k > 1:
            means, best = per_prompt(pairs)
            view.per_prompt_mean, view.best_of_k = summ(means), summ(best)
        views[name] = view
    if passk is not None:
        for kk in ec.pass_k:
            values = [100.0 * v[kk] for v in passk.per_prompt.values() if kk in v]
            if values:
                views[f"pass@{kk}"] = MetricView(per_sample=summ(values))
        for row, status in zip(rows, passk.statuses, strict=True):
            if status:
                row.sandbox.append(status)
        if passk.skipped_k:
            parts["warnings"].append(f"pass@k for k={passk.skipped_k} skipped on prompts with fewer samples; raise infer.samples")
    by_task: dict[str, dict[str, Summary]] = {}
    for task in sorted({r.task for r in rows}):
        task_rows = [r for r in rows if r.task == task]
        by_task[task] = {n: summ([r.scores[n] for r in task_rows if r.scores.get(n) is not None]) for n in names}
        by_task[task] = {n: s for n, s in by_task[task].items() if s.n}
        if passk is not None:
            for kk in ec.pass_k:
                vals = [100.0 * v[kk] for eid, v in passk.per_prompt.items() if kk in v and any(r.example_id == eid for r in task_rows)]
                if vals:
                    by_task[task][f"pass@{kk}"] = summ(vals)
    by_judge: dict[str, dict[str, Summary]] = {}
    for info in parts["judges"]:
        label = f"judge{info.index}"
        judged = {m for r in rows for m in r.per_judge.get(label, {}) if m != "flipped"}
        by_judge[info.label] = {m: summ([r.per_judge[label][m] for r in rows if m in r.per_judge.get(label, {})]) for m in sorted(judged)}
    spread = {m: statistics.fmean(v) for m in ("similarity", "precision", "pairwise")
              if (v := [r.spread[m] for r in rows if m in r.spread])}
    failures = _failures(judgments, rows, passk)
    summaries = {name: view.per_sample for name, view in views.items()}
    report = EvalReport(
        run_id=getattr(run, "run_id", None), iteration=iteration, mode=ec.mode if judgments else "judge-free",
        rubric=rubric.id if rubric else None, repeats=ec.repeats, answers=len(rows), prompts=len({r.example_id for r in rows}),
        samples_per_prompt=k, judges=parts["judges"], ensemble=ec.ensemble if len(parts["judges"]) > 1 else None,
        metrics=views, by_task=by_task, by_judge=by_judge, judge_spread=spread,
        judged_prompts=parts.get("judged_prompts"),
        pairwise=_pairwise_summary(rows) if judgments and ec.mode == "pairwise" else None,
        offline_trust=_offline_trust(config, views), sandbox=passk.isolation if passk else None, failures=failures,
        target=check_target(ec.target, summaries), warnings=parts["warnings"], cost_usd=parts["cost_usd"],
    )
    if report.judged_prompts is not None:
        report.warnings.append(f"the judges scored {report.judged_prompts} of {report.prompts} prompts (evaluate.judge_sample); "
                               "the judge-free metrics cover all of them")
    if failures.judgments:
        report.warnings.append(f"{failures.judgments} of {failures.total_judgments} judgments failed after retries: {failures.by_reason}")
    report.by_iteration = _history(run, report)
    return report


def _failures(judgments: list[Judgment], rows: list[ItemScores], passk: Any) -> Failures:
    failed = [j for j in judgments if not j.ok]
    judge_metrics = {"similarity", "precision", "pairwise"}
    asked = {(j.example_id, j.sample) for j in judgments}  # with evaluate.judge_sample, not every answer is judged
    return Failures(
        judgments=len(failed), total_judgments=len(judgments),
        by_reason=dict(Counter(failure_kind(j.error or "") for j in failed)),
        unscored_answers=sum(1 for r in rows if (r.example_id, r.sample) in asked and all(r.scores.get(m) is None for m in judge_metrics)),
        sandbox=dict(passk.counts) if passk else {},
        examples=[f"{j.example_id}#{j.sample} judge{j.judge} repeat {j.repeat}: {(j.error or '')[:300]}" for j in failed[:5]],
    )


def _pairwise_summary(rows: list[ItemScores]) -> PairwiseSummary:
    scores = [s for r in rows for s in r.per_judge.values() if "pairwise" in s]
    n = len(scores)
    share = lambda value: sum(s["pairwise"] == value for s in scores) / n if n else 0.0  # noqa: E731
    both = [s for s in scores if s["flipped"] >= 0]
    return PairwiseSummary(n=n, win=share(100.0), tie=share(50.0), loss=share(0.0),
                           flip_rate=sum(s["flipped"] == 1.0 for s in both) / len(both) if both else None)


def _offline_trust(config: Any, views: dict[str, MetricView]) -> dict[str, dict[str, Any]]:
    from llamaduo.evaluate.calibration import load_trust

    out = {}
    for name in ("rouge_l", "embedding"):
        if name in views and (trust := load_trust(config, name)) is not None:
            out[name] = trust
    return out


def _history(run: Any, report: EvalReport) -> dict[int, dict[str, float | None]]:
    """Means per iteration: earlier reports of this run plus this one."""
    history: dict[int, dict[str, float | None]] = {}
    if run is not None and run.path("eval").is_dir():
        for path in sorted(run.path("eval").glob("iter-*/report.json")):
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
                history[int(old["iteration"])] = {m: v["per_sample"]["mean"] for m, v in old.get("metrics", {}).items()}
            except (OSError, ValueError, KeyError, TypeError):
                continue
    history[report.iteration] = {m: v.per_sample.mean for m, v in report.metrics.items()}
    return dict(sorted(history.items()))


def _persist(run: Any, iteration: int, rows: list[ItemScores], judgments: list[Judgment], report: EvalReport) -> None:
    folder = run.path(f"eval/iter-{iteration}")
    atomic_write_text(folder / "judgments.jsonl", "".join(j.model_dump_json() + "\n" for j in judgments))
    atomic_write_text(folder / "scores.jsonl", "".join(r.model_dump_json() + "\n" for r in rows))
    atomic_write_text(folder / "report.json", report.model_dump_json(indent=2) + "\n")
    run.event("evaluated", iteration=iteration, target_passed=report.target.passed, explanation=report.target.explanation,
              failed_judgments=report.failures.judgments, cost_usd=report.cost_usd)
