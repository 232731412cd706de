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
from llamaduo.loop.outcome import (
    NotMeasured, iteration_spend, plateaued, project_spend, record_from_report, spend_rows, value, void_evaluation, void_synthesis,
)
from llamaduo.loop.state import IterationRecord, LoopState
from llamaduo.records import Answer, Example
from llamaduo.runs import MANIFEST, RunFolder, new_run_id

# Sections whose change makes earlier results of a run meaningless; loop limits and the budget may change on resume.
RESULT_SECTIONS = ("data", "synth", "train", "infer", "evaluate")


class StageFolder(RunFolder):
    """A sub-folder of a run (iter-<k>/) that stages write into; spend goes to the parent run, and to `iteration`."""

    def __init__(self, root: Path, run_id: str, iteration: int | None = None):
        super().__init__(root)
        self._run_id = run_id
        self.iteration = iteration

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
            state.status, state.problem = "running", None
            try:
                self._drive(run, state)
            except BudgetExceeded as exc:
                self._stop(run, state, "budget", exc.message)
            except NotMeasured as exc:
                self._not_measured(run, state, exc)
                raise
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
        from llamaduo.service.prices import check_priced

        check_priced(config)
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
        # An iteration whose scores were void is evaluated again (its eval step was dropped when it was found void).
        state.iterations = [r for r in state.iterations if r.not_measured is None]
        if config.data.sources:
            self._step(run, state, "ingest", lambda: self.ingest())
        self._step(run, state, "split", self.split)
        store = self.store
        state.steps.setdefault("test_hash", store.check_test_frozen())
        test = store.examples("test")
        train = store.examples("train")
        missing = loop.min_train - len(train)
        if missing > 0:
            self._synth_step(run, state, 0, missing)
        if loop.baseline:
            self._evaluate_model(run, state, 0, config.train.base_model, test)
        # Iterations before the last finished one ended without stopping the run: a resume starts at that last one.
        last_done = max((r.iteration for r in state.iterations), default=0)
        for k in range(max(1, last_done), loop.max_iterations + 1):
            if k > 1:
                # The data for iteration k is synthesised when it starts, not when k-1 ends: a crash between
                # k-1's evaluation and this round then resumes into the round, and the last iteration buys none.
                self._synth_step(run, state, k - 1, self._batch_size(k - 1))
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
        previous = state.steps.get(f"iter{k - 1}.synth") or {}  # for k=1: the round that topped train up to loop.min_train
        record = self._evaluate_model(run, state, k, model_dir, test, started=started, train_size=len(examples), model_dir=model_dir,
                                      synthetic_total=sum(1 for e in examples if e.metadata.get("synthetic")),
                                      synthetic_added=int(previous.get("accepted", 0)))
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
        void = void_evaluation(self.config, report, run.path(f"eval/iter-{k}/judgments.jsonl"), k)
        record = record_from_report(k, report, void, self.config.evaluate.target).model_copy(update=fields)
        record.seconds = round(time.perf_counter() - started, 2)
        record.spend_usd = round(iteration_spend(spend_rows(self.config, run.run_id)).get(k, (0.0, 0))[0], 6)
        if k == 0:
            state.baseline = record.judge_free | record.metrics
        state.iterations.append(record)
        if void is not None:
            from llamaduo.evaluate.api import forget_failed_judgments

            # Evaluated again on the next run: the step is dropped and its failed judgments are asked again.
            del state.steps[f"iter{k}.eval"]
            forget_failed_judgments(run, k)
        state.save(run.root)
        if void is not None:
            raise void
        return record

    def _train_config(self, state: LoopState) -> Config:
        """Retrain from the base model, or continue from the last iteration's model when loop.retrain_from=last."""
        last = [r for r in state.iterations if r.iteration > 0 and r.model_dir]
        if self.config.loop.retrain_from == "last" and last:
            return self.config.model_copy(update={"train": self.config.train.model_copy(update={"base_model": last[-1].model_dir})})
        return self.config

    def _synth_step(self, run: RunFolder, state: LoopState, k: int, size: int) -> None:
        """The round after iteration k (in iter-<k>/), which feeds iteration k+1 and is booked to it in the ledger."""
        report = self._step(run, state, f"iter{k}.synth", lambda: self._synth_round(run, k, size))
        void = void_synthesis(report, k + 1)
        if void is not None:
            # Asked again on the next run: the step is dropped, and the round's journal of failed calls with it.
            del state.steps[f"iter{k}.synth"]
            state.save(run.root)
            for name in ("calls.jsonl", "accepted.jsonl"):
                run.path(f"iter-{k}/synth/{name}").unlink(missing_ok=True)
            raise void

    def _synth_round(self, run: RunFolder, k: int, size: int) -> Any:
        # Each round samples its seeds with its own seed; the same seed would replay the previous round's (cached) prompts.
        synth = self.config.synth.model_copy(update={"seed": self.config.synth.seed + 1000 * k})
        config = self.config.model_copy(update={"synth": synth})
        return self.synth(size, config=config, run=StageFolder(run.root / f"iter-{k}", run.run_id, iteration=k + 1))

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
        if budget is not None and project_spend(self.config) >= budget:
            return "budget"
        if plateaued([r for r in state.iterations if r.iteration > 0], self.config.loop.plateau_metric, self.config.loop.patience):
            return "plateau"
        return None

    def _select_best(self, state: LoopState) -> None:
        metric = self.config.loop.plateau_metric
        trained = [r for r in state.iterations if r.iteration > 0 and r.not_measured is None]
        if not trained:
            return
        best = max(trained, key=lambda r: (r.target_met, value(r, metric) if value(r, metric) is not None else float("-inf"), -r.iteration))
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

    def _not_measured(self, run: RunFolder, state: LoopState, void: NotMeasured) -> None:
        """Record a run stopped by a void result, so that `status` and the report show it; the caller re-raises."""
        self._select_best(state)
        state.status, state.stop_reason, state.problem = "failed", "not_measured", void.message
        state.save(run.root)
        run.update_manifest(output_model=state.best_model_dir, best_iteration=state.best_iteration, stop_reason="not_measured")
        run.event("run_not_measured", cause=void.problem, fix=void.fix)
        self._track(run)
        self.say(f"stopped: {void.problem}")
        void.state = state


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
