"""`judge_check`: how far a judge (or a judge-free scorer) agrees with human labels on PandaLM, LLMBar and SummEval.

The result is stored under `.llamaduo/judge_check/` in the project and shown next to every score that judge produces.
Judges use the same rubrics and both-orders pairwise procedure as `evaluate`. The offline scorers (rouge_l,
embedding) have no rubric, so docs/evaluation.md explains how each set is turned into a similarity question.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from llamaduo.atomic import atomic_write_json
from llamaduo.errors import LlamaduoError
from llamaduo.records import Answer, Message

SETS = ("pandalm", "llmbar", "summeval")
OFFLINE = ("rouge_l", "embedding")
TIE_MARGIN = 0.01
"""Offline pairwise picks call a tie when the two similarities differ by less than this (0-1 scale)."""


class JudgeCheckReport(BaseModel):
    scorer: str
    """`openai/gpt-4o-mini` for judge 0, or an offline scorer name."""
    kind: str
    """`judge` or `offline`."""
    checked_at: str
    sample: int
    seed: int
    sets: dict[str, dict[str, float | int | None]] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    cost_usd: float = 0.0

    def flat(self) -> dict[str, Any]:
        """The figures as `set.metric` keys, the form shown next to scores."""
        out: dict[str, Any] = {"checked_at": self.checked_at, "sample": self.sample}
        for name, figures in self.sets.items():
            out.update({f"{name}.{k}": v for k, v in figures.items()})
        return out


# ---- data ----------------------------------------------------------------------------------------


def find_data(config: Any, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The shared human-labelled data: the given folder, $LLAMADUO_SHARED_DATA, or ../shared/data."""
    candidates = [data_dir, os.environ.get("LLAMADUO_SHARED_DATA"), config.workdir.parent / "shared" / "data",
                  Path.cwd().parent / "shared" / "data", Path.cwd() / "shared" / "data"]
    for c in candidates:
        if c and (Path(c) / "pandalm_testset").is_dir():
            return Path(c)
    raise LlamaduoError("the human-labelled sets (pandalm_testset/, llmbar/, summeval/) were not found",
                        "Pass --data PATH (the folder holding them) or set LLAMADUO_SHARED_DATA")


def load_pandalm(root: Path) -> list[dict[str, Any]]:
    rows = json.loads((root / "pandalm_testset" / "testset-v1.json").read_text(encoding="utf-8"))
    refs_path = root / "pandalm_testset" / "gpt-3.5-turbo-testset-v1.json"
    refs = {r["idx"]: r.get("gpt_reference", "") for r in json.loads(refs_path.read_text(encoding="utf-8"))} if refs_path.exists() else {}
    out = []
    for r in rows:
        votes = [r["annotator1"], r["annotator2"], r["annotator3"]]
        top = max(set(votes), key=votes.count)
        if votes.count(top) < 2:
            continue  # three different labels: no majority to agree with
        prompt = r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "")
        out.append({"id": f"pandalm-{r['idx']}", "prompt": prompt, "a": r["response1"], "b": r["response2"], "label": top,
                    "reference": refs.get(r["idx"], "")})
    return out


def load_llmbar(root: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted((root / "llmbar").glob("*.json")):
        for i, r in enumerate(json.loads(path.read_text(encoding="utf-8"))):
            out.append({"id": f"llmbar-{path.stem}-{i}", "prompt": r["input"], "a": r["output_1"], "b": r["output_2"], "label": int(r["label"])})
    return out


def load_summeval(root: Path) -> list[dict[str, Any]]:
    with open(root / "summeval" / "summeval.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _sample(rows: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    return rows if n >= len(rows) else random.Random(seed).sample(rows, n)


# ---- statistics ----------------------------------------------------------------------------------


def agreement(predicted: list[int | None], gold: list[int]) -> dict[str, float | int | None]:
    """Accuracy and Cohen's kappa of labels (0 tie, 1, 2); failed predictions count against accuracy."""
    from sklearn.metrics import cohen_kappa_score

    pairs = [(p, g) for p, g in zip(predicted, gold, strict=True) if p is not None]
    acc = sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold) if gold else None
    kappa = None
    if len(pairs) > 1 and len({p for p, _ in pairs} | {g for _, g in pairs}) > 1:
        kappa = float(cohen_kappa_score([g for _, g in pairs], [p for p, _ in pairs]))
    return {"n": len(gold), "accuracy": acc, "kappa": kappa, "failed": len(gold) - len(pairs),
            "tie_rate": sum(p == 0 for p, _ in pairs) / len(pairs) if pairs else None}


def correlations(scores: list[float | None], rows: list[dict[str, Any]], aspects=("relevance", "consistency"), prefix: str = "") -> dict[str, Any]:
    from scipy.stats import kendalltau, spearmanr

    pairs = [(s, r) for s, r in zip(scores, rows, strict=True) if s is not None]
    out: dict[str, Any] = {"n": len(rows), "failed": len(rows) - len(pairs)}
    for aspect in aspects:
        x, y = [s for s, _ in pairs], [r[aspect] for _, r in pairs]
        ok = len(pairs) > 2 and len(set(x)) > 1
        out[f"{prefix}{aspect}.spearman"] = float(spearmanr(x, y).statistic) if ok else None
        out[f"{prefix}{aspect}.kendall"] = float(kendalltau(x, y).statistic) if ok else None
    return out


# ---- scorers -------------------------------------------------------------------------------------


def _offline_scores(name: str, candidates: list[str], references: list[str]) -> list[float]:
    from llamaduo.evaluate.metrics import get_metric

    metric = get_metric(name)
    if metric.score is None:
        raise LlamaduoError(f"`{name}` cannot be judge-checked", f"Check one of: {', '.join(OFFLINE)}")
    return metric.score(candidates, references)


def _offline_pick(name: str, rows: list[dict[str, Any]], key: str) -> list[int]:
    """1 or 2: the response more similar to `row[key]` (a tie within TIE_MARGIN gives 0)."""
    sa = _offline_scores(name, [r["a"] for r in rows], [r[key] for r in rows])
    sb = _offline_scores(name, [r["b"] for r in rows], [r[key] for r in rows])
    return [0 if abs(a - b) < TIE_MARGIN else (1 if a > b else 2) for a, b in zip(sa, sb, strict=True)]


def _pair_answers(rows: list[dict[str, Any]]) -> list[Answer]:
    # Response 1 plays the candidate and response 2 the reference: a "win" means response 1 is better.
    return [Answer(example_id=r["id"], task="judge-check", messages=[Message(role="user", content=r["prompt"])],
                   reference=r["b"], text=r["a"]) for r in rows]


def _judge_pairs(config: Any, index: int, rows: list[dict[str, Any]], run: Any) -> tuple[list[int | None], float]:
    from llamaduo.evaluate.ensemble import judge_all
    from llamaduo.evaluate.judge import pair_verdict
    from llamaduo.evaluate.offline import Item
    from llamaduo.evaluate.rubric import load_rubric

    cfg = _one_judge(config, index, "pairwise")
    items = [Item(a, r["prompt"], a.reference) for a, r in zip(_pair_answers(rows), rows, strict=True)]
    judgments, cost = judge_all(cfg, items, load_rubric("pairwise", version=config.evaluate.rubric_version), run, resume=False)
    by_id: dict[str, list[Any]] = {}
    for j in judgments:
        by_id.setdefault(j.example_id, []).append(j)
    label = {"win": 1, "loss": 2, "tie": 0}
    return [label.get(pair_verdict(by_id.get(r["id"], []))[0] or "", None) for r in rows], cost


def _judge_summaries(config: Any, index: int, rows: list[dict[str, Any]], run: Any) -> tuple[dict[str, list[float | None]], float]:
    from llamaduo.evaluate.ensemble import judge_all
    from llamaduo.evaluate.offline import Item
    from llamaduo.evaluate.rubric import load_rubric

    cfg = _one_judge(config, index, "pointwise")
    prompts = [f"Summarize this news article in a few sentences.\n\n{r['article']}" for r in rows]
    # SummEval has no reference summaries here; the article is the ground truth the summary must agree with.
    items = [Item(Answer(example_id=f"{r['summary_id']}-{r['article_id']}", task="summeval", messages=[Message(role="user", content=p)],
                         reference=r["article"], text=r["summary"]), p, r["article"]) for r, p in zip(rows, prompts, strict=True)]
    judgments, cost = judge_all(cfg, items, load_rubric("pointwise", version=config.evaluate.rubric_version), run, resume=False)
    out: dict[str, list[float | None]] = {}
    for metric in ("similarity", "precision"):
        by_id: dict[str, list[float]] = {}
        for j in judgments:
            if j.ok and metric in j.scores:
                by_id.setdefault(j.example_id, []).append(j.scores[metric])
        out[metric] = [sum(v) / len(v) if (v := by_id.get(it.answer.example_id)) else None for it in items]
    return out, cost


def _one_judge(config: Any, index: int, mode: str) -> Any:
    judges = config.service.judge
    if not 0 <= index < len(judges):
        raise LlamaduoError(f"there is no judge {index}: service.judge lists {len(judges)}", f"Use --judge 0..{len(judges) - 1}")
    service = config.service.model_copy(update={"judge": [judges[index]]})
    evaluate = config.evaluate.model_copy(update={"mode": mode, "rubric": None})
    new = config.model_copy(update={"service": service, "evaluate": evaluate})
    new._base_dir = config.base_dir
    return new


# ---- entry point ---------------------------------------------------------------------------------


def judge_check(config: Any, judge: int | str = 0, sets: tuple[str, ...] | list[str] = SETS, sample: int | None = None,
                *, data_dir: str | os.PathLike[str] | None = None, seed: int = 0, run: Any = None) -> JudgeCheckReport:
    """Check judge `judge` (an index into service.judge) or an offline scorer (`rouge_l`, `embedding`) against humans."""
    unknown = [s for s in sets if s not in SETS]
    if unknown or not sets:
        raise LlamaduoError(f"unknown judge-check set(s): {', '.join(unknown) or 'none given'}", f"Choose from {', '.join(SETS)}")
    offline = isinstance(judge, str) and not judge.isdigit()
    if offline and judge not in OFFLINE:
        raise LlamaduoError(f"`{judge}` is neither a judge index nor an offline scorer", f"Use 0, 1, ... or one of {', '.join(OFFLINE)}")
    index = None if offline else int(judge)
    if index is not None:
        _one_judge(config, index, "pointwise")  # validates the index before anything runs
    root = find_data(config, data_dir)
    n = sample or config.evaluate.judge_check_sample
    name = str(judge) if offline else f"{config.service.judge[index].provider}/{config.service.judge[index].model}"
    report = JudgeCheckReport(scorer=name, kind="offline" if offline else "judge", sample=n, seed=seed,
                              checked_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    for set_name in sets:
        if set_name == "summeval":
            rows = _sample(load_summeval(root), n, seed)
            if offline:
                report.sets["summeval"] = correlations(_offline_scores(name, [r["summary"] for r in rows], [r["article"] for r in rows]), rows)
            else:
                scores, cost = _judge_summaries(config, index, rows, run)
                report.cost_usd += cost
                report.sets["summeval"] = {**correlations(scores["precision"], rows, prefix="precision."),
                                           **correlations(scores["similarity"], rows, prefix="similarity.")}
            continue
        rows = _sample(load_pandalm(root) if set_name == "pandalm" else load_llmbar(root), n, seed)
        gold = [r["label"] for r in rows]
        if offline:
            key = "reference" if set_name == "pandalm" else "prompt"
            report.sets[set_name] = agreement(_offline_pick(name, rows, key), gold)
        else:
            predicted, cost = _judge_pairs(config, index, rows, run)
            report.cost_usd += cost
            report.sets[set_name] = agreement(predicted, gold)
    if offline:
        report.notes.append("pandalm: the response closer to gpt-3.5-turbo's reference answer wins; llmbar: the response closer "
                            "to the instruction wins; summeval: similarity of the summary to its source article")
    save(config, report, run)
    return report


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "judge"


def trust_path(config: Any, name: str) -> Path:
    return config.path(".llamaduo/judge_check") / f"{_slug(name)}.json"


def save(config: Any, report: JudgeCheckReport, run: Any = None) -> Path:
    path = atomic_write_json(trust_path(config, report.scorer), report.model_dump(mode="json"))
    if run is not None:
        run.write_json(f"judge_check/{_slug(report.scorer)}.json", report.model_dump(mode="json"))
        run.event("judge_checked", scorer=report.scorer, **{k: v for k, v in report.flat().items() if k != "checked_at"})
    return path


def load_trust(config: Any, name: str) -> dict[str, Any] | None:
    """The stored judge-check figures of a judge (`provider/model`) or offline scorer, flattened; None if never checked."""
    path = trust_path(config, name)
    if not path.is_file():
        return None
    try:
        return JudgeCheckReport.model_validate_json(path.read_text(encoding="utf-8")).flat()
    except ValueError:
        return None
