"""`Pipeline`: the LlamaDuo loop (train -> infer -> evaluate -> synthesise -> retrain) with crash-safe resume.

Every step records its result in `state.json` as it finishes; a rerun skips finished steps, and a step cut off
mid-way resumes through its own stage (response cache, training checkpoints, persisted synthetic pairs).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llamaduo.config import Config, load_config
from llamaduo.errors import BudgetExceeded, LlamaduoError
from llamaduo.loop.lock import RunLock
from llamaduo.loop.state import IterationRecord, LoopState, MetricSummary
from llamaduo.records import Answer, Example
from llamaduo.runs import MANIFEST, RunFolder, new_run_id

# Sections whose change makes earlier results of a run meaningless; loop limits and the budget may change on resume.
RESULT_SECTIONS = ("data", "synth", "train", "infer", "evaluate")


class StageFolder(RunFolder):
    """A sub-folder of a run (iter-<k>/) that stages write into; spend is still attributed to the parent run."""

    def __init__(self, root: Path, run_id: str):
        super().__init__(root)
        self._run_id = run_id

    @property
    def run_id(self) -> str:
        return self._run_id


def config_fingerprint(config: Config) -> dict[str, str]:
    """A hash per result-deciding section, so a refused resume can name what changed."""
    data = config.redacted()
    parts = {name: data[name] for name in RESULT_SECTIONS}
    parts["service"] = {
        "generator": _model_id(data["service"]["generator"]),
        "judge": [_model_id(j) for j in data["service"]["judge"]],
    }
    parts["seed"] = data["project"]["seed"]
    return {k: hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()[:12] for k, v in parts.items()}


def _model_id(model: dict[str, Any]) -> dict[str, Any]:
    return {"provider": model["provider"], "model": model["model"], "params": model["params"]}


class Pipeline:
    """The whole pipeline over one config. `run()` drives the loop; each stage is also callable on its own."""

    def __init__(self, config: Config, *, run_id: str | None = None, reporter: Callable[[str], None] | None = None):
        self.config = config
        self.run_id = run_id or config.project.name
        self.say = reporter or (lambda message: None)

    @classmethod
    def from_config(cls, source: str | Path | dict[str, Any] | Config | None = None, overrides: Sequence[str] = (), **options: Any) -> Pipeline:
        """Build from a YAML path, a mapping (the same keys as llamaduo.yaml) or a Config."""
        if isinstance(source, Config):
            config = source
        elif isinstance(source, dict):
            config = load_config(data=source, overrides=overrides)
        else:
            config = load_config(source, overrides, required=source is not None)
        return cls(config, **options)

    # ---- the stages, one by one ---------------------------------------------------------------

    @property
    def store(self) -> Any:
        from llamaduo.data.store import DatasetStore

        return DatasetStore(self.config.path(self.config.data.store))

    def ingest(self, **options: Any) -> Any:
        from llamaduo.data.ingestion import ingest

        return ingest(self.config, **options)

    def split(self) -> Any:
        from llamaduo.data.splitting import split

        return split(self.config)

    def synth(self, n: int, *, config: Config | None = None, run: Any = None) -> Any:
        from llamaduo.synth.engine import run_synth

        return run_synth(config or self.config, n, run=run)

    def train(self, examples: Sequence[Example] | None = None, *, config: Config | None = None, run: Any = None, output_dir: Path | None = None) -> Any:
        from llamaduo.train.outputs import last_checkpoint
        from llamaduo.train.trainer import train

        resume = output_dir is not None and last_checkpoint(Path(output_dir) / "checkpoints") is not None
        return train(config or self.config, examples=examples, run=run, resume=resume, output_dir=output_dir)

    def infer(self, model: str, examples: Sequence[Example] | None = None, *, run: Any = None, output: Path | None = None) -> Any:
        from llamaduo.infer.runner import infer

        return infer(self.config, model, examples=examples, run=run, output=output)

    def evaluate(self, answers: Sequence[Answer], *, run: Any = None, iteration: int = 0, examples: Sequence[Example] | None = None) -> Any:
        from llamaduo.evaluate.api import evaluate

        return evaluate(self.config, answers, run=run, iteration=iteration, examples=examples)

    # ---- the loop -------------------------------------------------------------------------------

    def run(self, *, force_new: bool = False) -> LoopState:
        """Run (or resume) the loop until the target, max iterations, the budget or a plateau stops it."""
        self._check_inputs()
        runs_dir = self.config.path(self.config.project.runs_dir)
        if force_new:
            self.run_id = new_run_id(self.config.project.name)
        root = runs_dir / self.run_id
        with RunLock(root):
            run = RunFolder(root) if (root / MANIFEST).is_file() else RunFolder.create(runs_dir, self.config, run_id=self.run_id, seeds=self._seeds())
            state = self._load_state(run)
            if state.status == "done":
                self.say(f"run {self.run_id} already finished ({state.stop_reason}); pass --force-new to start another")
                return state
            state.status = "running"
            try:
                self._drive(run, state)
            except BudgetExceeded as exc:
                self._stop(run, state, "budget", exc.message)
            except BaseException as exc:
                # State stays as of the last finished step, so a rerun resumes there; record why for `status`.
                state.status = "failed"
                state.save(run.root)
                run.event("run_interrupted", error=type(exc).__name__)
                raise
            return state

    def _check_inputs(self) -> None:
        config = self.config
        from llamaduo.evaluate.aggregate import parse_target_key
        from llamaduo.evaluate.metrics import get_metric

        for key in config.evaluate.target:
            metric, _ = parse_target_key(key)
            judged = {"similarity", "precision", "pairwise"}
            if metric not in judged and metric not in config.evaluate.metrics:
                get_metric(metric)  # raises a one-line error for an unknown name
        if config.service.budget_usd is not None and config.service.budget_usd <= 0:
            raise LlamaduoError("service.budget_usd must be positive", "Set a budget in USD above 0, or remove it for no cap.")
        # Data checks come after config checks, so a bad config is reported even before any data exists.
        if not config.data.sources and not self.store.examples("raw"):
            raise LlamaduoError(
                f"no coverage data: data.sources is empty and the store {config.path(config.data.store)} holds no rows",
                "Add data.sources to the config, or run `llamaduo data ingest FILE --task NAME` first.",
            )
        for source in config.data.sources:
            path = config.path(source.path)
            if not path.exists() and ("/" not in source.path or source.path.startswith((".", "/"))):
                raise LlamaduoError(f"data source {source.path} does not exist", "Fix data.sources in the config, or ingest the data first.")

    def _seeds(self) -> dict[str, int]:
        c = self.config
        return {"project": c.project.seed, "split": c.data.split_seed, "synth": c.synth.seed, "train": c.train.seed, "infer": c.infer.seed}

    def _load_state(self, run: RunFolder) -> LoopState:
        fingerprint = config_fingerprint(self.config)
        digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
        state = LoopState.load(run.root)
        if state is None:
            state = LoopState(run_id=run.run_id, config_hash=digest, started_at=time.time())
            state.steps["config_sections"] = fingerprint
            state.save(run.root)
            return state
        if state.config_hash != digest:
            before = state.steps.get("config_sections", {})
            changed = sorted(k for k in fingerprint if before.get(k) != fingerprint[k])
            raise LlamaduoError(
                f"run {run.run_id} was started with another config ({', '.join(changed) or 'settings'} changed)",
                "Resume with the original config, or pass --force-new to start a new run.",
            )
        self.say(f"resuming run {run.run_id} after step {state.stage}")
        return state

    def _step(self, run: RunFolder, state: LoopState, name: str, work: Callable[[], Any]) -> Any:
        """Run `work` unless a previous attempt finished it; persist what it returned."""
        if name in state.steps:
            return state.steps[name]
        self.say(f"[{name}] ...")
        run.event("step_started", step=name)
        started = time.perf_counter()
        result = work()
        payload = result.model_dump(mode="json") if hasattr(result, "model_dump") else result
        state.steps[name] = payload
        state.stage = name
        state.step_seconds[name] = round(time.perf_counter() - started, 2)
        state.save(run.root)
        run.event("step_finished", step=name, seconds=state.step_seconds[name])
        return payload

    def _drive(self, run: RunFolder, state: LoopState) -> None:
        config, loop = self.config, self.config.loop
        if config.data.sources:
            self._step(run, state, "ingest", lambda: self.ingest())
        self._step(run, state, "split", self.split)
        store = self.store
        state.steps.setdefault("test_hash", store.check_test_frozen())
        test = store.examples("test")
        train = store.examples("train")
        missing = loop.min_train - len(train)
        if missing > 0:
            self._step(run, state, "iter0.synth", lambda: self._synth_round(run, 0, missing))
        if loop.baseline:
            self._evaluate_model(run, state, 0, config.train.base_model, test)
        # Iterations before the last finished one ended without stopping the run: a resume starts at that last one.
        last_done = max((r.iteration for r in state.iterations), default=0)
        for k in range(max(1, last_done), loop.max_iterations + 1):
            if k > 1:
                # The data for iteration k is synthesised when it starts, not when k-1 ends: a crash between
                # k-1's evaluation and this round then resumes into the round, and the last iteration buys none.
                size = self._batch_size(k - 1)
                self._step(run, state, f"iter{k - 1}.synth", lambda k=k, size=size: self._synth_round(run, k - 1, size))
            state.iteration = k
            record = state.record(k) or self._iteration(run, state, k, test)
            reason = self._stop_reason(state, record)
            if reason:
                self._stop(run, state, reason, record.target_explanation)
                return
        self._stop(run, state, "max_iterations", f"reached loop.max_iterations={loop.max_iterations}")

    def _iteration(self, run: RunFolder, state: LoopState, k: int, test: list[Example]) -> IterationRecord:
        store = self.store
        started = time.perf_counter()
        examples = store.examples("train") + store.examples("synthetic")
        train_config = self._train_config(state)
        folder = StageFolder(run.root / f"iter-{k}", run.run_id)
        trained = self._step(run, state, f"iter{k}.train", lambda: self.train(examples, config=train_config, run=run, output_dir=folder.path("train")))
        model_dir = trained["merged_dir"] or trained["output_dir"]
        previous = state.steps.get(f"iter{k - 1}.synth") or {}
        record = self._evaluate_model(run, state, k, model_dir, test, started=started, train_size=len(examples), model_dir=model_dir,
                                      synthetic_total=sum(1 for e in examples if e.metadata.get("synthetic")),
                                      synthetic_added=int(previous.get("accepted", 0)) if k > 1 else 0)
        self._select_best(state)
        state.save(run.root)
        self._track(run)
        return record

    def _track(self, run: RunFolder) -> None:
        """Index the run in the registry and, with report.tracking=mlflow, log it (both idempotent)."""
        from llamaduo.report.loader import load_run
        from llamaduo.report.registry import open_registry

        data = load_run(run.root.parent, run.run_id)
        with open_registry(self.config) as registry:
            registry.index_run(data)
        if self.config.report.tracking == "mlflow":
            from llamaduo.report.mlflow_tracking import log_run

            log_run(self.config, data)

    def _evaluate_model(self, run: RunFolder, state: LoopState, k: int, model: str, test: list[Example], *,
                        started: float | None = None, **fields: Any) -> IterationRecord:
        """Infer and evaluate, then append the iteration's record, complete with `fields`, in one state save."""
        existing = state.record(k)
        if existing is not None:
            return existing
        started = time.perf_counter() if started is None else started
        answers_path = run.root / f"iter-{k}" / "answers.jsonl"
        self._step(run, state, f"iter{k}.infer", lambda: self.infer(model, test, run=run, output=answers_path))
        from llamaduo.infer.runner import read_answers

        report = self._step(run, state, f"iter{k}.eval", lambda: self.evaluate(read_answers(answers_path), run=run, iteration=k, examples=test))
        record = _record_from_report(k, report).model_copy(update=fields)
        record.seconds = round(time.perf_counter() - started, 2)
        if k == 0:
            state.baseline = record.judge_free | record.metrics
        state.iterations.append(record)
        state.save(run.root)
        return record

    def _train_config(self, state: LoopState) -> Config:
        """Retrain from the base model, or continue from the last iteration's model when loop.retrain_from=last."""
        last = [r for r in state.iterations if r.iteration > 0 and r.model_dir]
        if self.config.loop.retrain_from == "last" and last:
            return self.config.model_copy(update={"train": self.config.train.model_copy(update={"base_model": last[-1].model_dir})})
        return self.config

    def _synth_round(self, run: RunFolder, k: int, size: int) -> Any:
        # Each round samples its seeds with its own seed; the same seed would replay the previous round's (cached) prompts.
        synth = self.config.synth.model_copy(update={"seed": self.config.synth.seed + 1000 * k})
        config = self.config.model_copy(update={"synth": synth})
        return self.synth(size, config=config, run=StageFolder(run.root / f"iter-{k}", run.run_id))

    def _batch_size(self, k: int) -> int:
        schedule = self.config.loop.schedule
        size = schedule.size if schedule.mode == "fixed" else int(round(schedule.size * schedule.factor ** (k - 1)))
        return min(size, schedule.max_size) if schedule.max_size else size

    def _stop_reason(self, state: LoopState, record: IterationRecord) -> str | None:
        if record.target_met:
            return "target_met"
        if record.iteration >= self.config.loop.max_iterations:
            return "max_iterations"
        budget = self.config.service.budget_usd
        if budget is not None and _spent(self.config) >= budget:
            return "budget"
        if _plateaued([r for r in state.iterations if r.iteration > 0], self.config.loop.plateau_metric, self.config.loop.patience):
            return "plateau"
        return None

    def _select_best(self, state: LoopState) -> None:
        metric = self.config.loop.plateau_metric
        trained = [r for r in state.iterations if r.iteration > 0]
        if not trained:
            return
        best = max(trained, key=lambda r: (r.target_met, _value(r, metric) if _value(r, metric) is not None else float("-inf"), -r.iteration))
        state.best_iteration, state.best_model_dir = best.iteration, best.model_dir

    def _stop(self, run: RunFolder, state: LoopState, reason: str, detail: str) -> None:
        self._select_best(state)
        state.status = "done" if reason != "budget" else "stopped"
        state.stop_reason = reason
        state.stage = "finished"
        state.save(run.root)
        run.update_manifest(output_model=state.best_model_dir, best_iteration=state.best_iteration, stop_reason=reason)
        run.event("run_finished", stop_reason=reason, detail=detail, best_iteration=state.best_iteration)
        self._track(run)
        self.say(f"stopped: {reason} ({detail})")


def _record_from_report(k: int, report: dict[str, Any]) -> IterationRecord:
    """Flatten an EvalReport into `metric.stat` summaries with their bootstrap CIs."""
    record = IterationRecord(iteration=k, spend_usd=float(report.get("cost_usd") or 0.0))
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
        target_map = record.metrics if name in ("similarity", "precision", "pairwise") else record.judge_free
        target_map.update(entry)
    return record


def _value(record: IterationRecord, metric: str) -> float | None:
    found = record.metrics.get(metric) or record.judge_free.get(metric)
    return found.mean if found else None


def _plateaued(records: list[IterationRecord], metric: str, patience: int) -> bool:
    """True when the last `patience` iterations did not beat the best earlier mean with their CI lower bound."""
    if len(records) <= patience:
        return False
    best_before = max((v for r in records[:-patience] if (v := _value(r, metric)) is not None), default=None)
    if best_before is None:
        return False
    recent = [(r.metrics.get(metric) or r.judge_free.get(metric)) for r in records[-patience:]]
    return all(m is None or m.ci_low is None or m.ci_low <= best_before for m in recent)


def _spent(config: Config) -> float:
    from llamaduo.service.cache import ServiceStore

    path = config.path(config.service.cache_path)
    if not path.is_file():
        return 0.0
    store = ServiceStore(path)
    try:
        return float(store.total_cost())
    finally:
        store.close()


def run_spend(config: Config, run_id: str, by: str = "stage") -> list[dict[str, Any]]:
    """What a run spent, grouped by stage, role or model (empty before any paid call)."""
    from llamaduo.service.cache import ServiceStore
    from llamaduo.service.ledger import spend

    path = config.path(config.service.cache_path)
    if not path.is_file():
        return []
    store = ServiceStore(path)
    try:
        return spend(store, run=run_id, by=by)  # type: ignore[arg-type]
    finally:
        store.close()


def find_run(config: Config, run_id: str | None) -> Path:
    """The folder of `run_id`, or of the newest loop run when none is named."""
    runs_dir = config.path(config.project.runs_dir)
    if run_id:
        folder = runs_dir / run_id
        if not (folder / "state.json").is_file():
            raise LlamaduoError(f"no loop run {run_id} in {runs_dir}", "Start one with `llamaduo run`, or check the run id.")
        return folder
    found = sorted(runs_dir.glob("*/state.json"), key=lambda p: p.stat().st_mtime) if runs_dir.is_dir() else []
    if not found:
        raise LlamaduoError(f"no loop runs in {runs_dir}", "Start one with `llamaduo run`.")
    return found[-1].parent
