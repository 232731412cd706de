"""Read a run folder into one `RunData` for reports: whatever exists, validated with the stages' own records.

A run that is still going renders with a notice; a file that exists but cannot be parsed is an error naming it,
since a report drawn from half a metrics file would mislead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from llamaduo.atomic import read_jsonl
from llamaduo.errors import LlamaduoError
from llamaduo.evaluate.judge import Judgment
from llamaduo.evaluate.report import EvalReport, ItemScores
from llamaduo.loop.state import IterationRecord, LoopState
from llamaduo.records import Answer

_ITER = re.compile(r"^iter-(\d+)$")


@dataclass
class StageData:
    """One evaluated model: an iteration's fine-tuned model, or the untrained baseline (`index` None)."""

    index: int | None
    is_baseline: bool = False
    record: IterationRecord | None = None
    eval: EvalReport | None = None
    scores: list[ItemScores] = field(default_factory=list)
    judgments: list[Judgment] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    synth: dict[str, Any] | None = None
    loss: list[tuple[float, float]] = field(default_factory=list)
    """(step, training loss) points."""

    @property
    def label(self) -> str:
        if self.is_baseline:
            return "baseline" if self.index is None else f"baseline (iteration {self.index})"
        return f"iteration {self.index}"


@dataclass
class RunData:
    run_id: str
    root: Path
    manifest: dict[str, Any]
    events: list[dict[str, Any]]
    state: LoopState | None
    iterations: list[StageData]
    baseline: StageData | None
    notices: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.state is not None:
            return self.state.status
        return "running" if not any(e.get("event") in ("run_done", "run_finished", "loop_done") for e in self.events) else "done"

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest.get("config") or {}


def run_root(runs_dir: Path, run_id: str) -> Path:
    root = Path(runs_dir) / run_id
    if not run_id or "/" in run_id or run_id in (".", ".."):
        raise LlamaduoError(f"{run_id!r} is not a run id", "Pass a folder name from `llamaduo runs list`")
    if not (root / "manifest.json").is_file():
        raise LlamaduoError(f"no run {run_id} in {runs_dir}", "List runs with `llamaduo runs list`")
    return root


def latest_run_id(runs_dir: Path) -> str:
    """The newest run folder (by manifest time), for `llamaduo report` without an argument."""
    manifests = sorted(Path(runs_dir).glob("*/manifest.json"), key=lambda p: p.stat().st_mtime) if Path(runs_dir).is_dir() else []
    if not manifests:
        raise LlamaduoError(f"there are no runs in {runs_dir}", "Start one with `llamaduo run`, or pass --config for another project")
    return manifests[-1].parent.name


def _corrupt(path: Path, why: str) -> LlamaduoError:
    return LlamaduoError(f"{path} is corrupt ({why})", "Restore the file or re-run the stage that writes it")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _corrupt(path, str(exc).split(":")[0]) from None


def parse_model(cls: type[BaseModel], raw: Any, path: Path) -> Any:
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise _corrupt(path, f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None


def read_rows(path: Path) -> list[Any]:
    """JSON lines (a torn last line, as a crash leaves, is skipped); bytes that are not UTF-8 make the file corrupt."""
    try:
        return read_jsonl(path)
    except UnicodeDecodeError:
        raise _corrupt(path, "not UTF-8 text") from None


def _rows(cls: type[BaseModel], path: Path) -> list[Any]:
    return [parse_model(cls, row, path) for row in read_rows(path)] if path.is_file() else []


def _first(root: Path, *names: str) -> Path | None:
    return next((root / n for n in names if (root / n).is_file()), None)


def load_run(runs_dir: Path, run_id: str) -> RunData:
    """Everything a report shows of `run_id`; raises a one-line error for a missing run or a corrupt file."""
    root = run_root(runs_dir, run_id)
    manifest = read_json(root / "manifest.json")
    if not isinstance(manifest, dict):
        raise _corrupt(root / "manifest.json", "not a JSON object")
    state = parse_model(LoopState, read_json(root / "state.json"), root / "state.json") if (root / "state.json").is_file() else None
    events = [e for e in read_rows(root / "events.jsonl") if isinstance(e, dict)]
    records = {r.iteration: r for r in state.iterations} if state else {}
    found = {int(m.group(1)) for p in root.glob("iter-*") if (m := _ITER.match(p.name))}
    found |= {int(m.group(1)) for p in root.glob("eval/iter-*") if (m := _ITER.match(p.name))}
    indices = sorted(found | set(records))
    if (root / "baseline").is_dir() or (root / "eval/baseline").is_dir():
        baseline: StageData | None = _stage(root, None, None, events)
    elif indices and indices[0] == 0:
        # The loop evaluates the untrained base model as iteration 0 and trains from iteration 1.
        baseline = _stage(root, 0, records.get(0), events)
        indices = indices[1:]
    else:
        baseline = None
    if baseline is not None:
        baseline.is_baseline = True
    iterations = [_stage(root, k, records.get(k), events) for k in indices]
    run = RunData(run_id, root, manifest, events, state, iterations, baseline)
    if run.status == "running":
        where = f" (stage {state.stage}, iteration {state.iteration})" if state else ""
        run.notices.append(f"This run is still running or was interrupted{where}: the report shows what exists so far.")
    elif state is not None and state.stop_reason == "not_measured":
        cause = (state.problem or "no cause recorded").removeprefix("not measured: ")
        run.notices.append(f"This run measured nothing usable and stopped: {cause}")
    elif state is not None and state.status in ("stopped", "failed"):
        run.notices.append(f"This run {state.status}: {state.stop_reason or 'no reason recorded'}.")
    if not iterations and baseline is None:
        run.notices.append("No iteration has been evaluated yet.")
    return run


def _stage(root: Path, k: int | None, record: IterationRecord | None, events: list[dict[str, Any]]) -> StageData:
    name = "baseline" if k is None else f"iter-{k}"
    stage = StageData(index=k, record=record)
    report = _first(root, f"{name}/eval.json", f"eval/{name}/report.json", f"{name}/eval/report.json")
    if report is not None:
        stage.eval = parse_model(EvalReport, read_json(report), report)
    for rel in (f"{name}/scores.jsonl", f"eval/{name}/scores.jsonl", f"{name}/eval/scores.jsonl"):
        stage.scores += _rows(ItemScores, root / rel)
    for rel in (f"{name}/judgments.jsonl", f"eval/{name}/judgments.jsonl", f"{name}/eval/judgments.jsonl"):
        stage.judgments += _rows(Judgment, root / rel)
    stage.answers = _rows(Answer, root / name / "answers.jsonl")
    synth = _first(root, f"{name}/synth.json", f"{name}/synth/report.json")
    if synth is not None:
        raw = read_json(synth)
        stage.synth = raw if isinstance(raw, dict) else {"report": raw}
    stage.loss = _loss_curve(root / name / "train", k, events) if k else []
    return stage


def _loss_curve(folder: Path, k: int, events: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """Loss points from the trainer's log history (the longest trainer_state.json), else from train events."""
    best: list[tuple[float, float]] = []
    if folder.is_dir():
        for path in folder.rglob("trainer_state.json"):
            raw = read_json(path)
            history = raw.get("log_history", []) if isinstance(raw, dict) else []
            points = [(float(h.get("step", i)), float(h["loss"])) for i, h in enumerate(history)
                      if isinstance(h, dict) and isinstance(h.get("loss"), int | float)]
            if len(points) > len(best):
                best = points
        for path in (folder / "metrics.jsonl", folder / "log.jsonl"):
            rows = [r for r in read_rows(path) if isinstance(r, dict)]
            points = [(float(r.get("step", i)), float(r["loss"])) for i, r in enumerate(rows) if isinstance(r.get("loss"), int | float)]
            if len(points) > len(best):
                best = points
    if not best:
        best = [(float(e.get("step", i)), float(e["loss"])) for i, e in enumerate(events)
                if e.get("iteration") == k and str(e.get("event", "")).startswith("train") and isinstance(e.get("loss"), int | float)]
    return sorted(best)
