"""Optional MLflow tracking (`report.tracking: mlflow`): a run's params, per-iteration metrics and report files.

Logging is idempotent: the MLflow run is found again by its `llamaduo.run_id` tag, and steps already logged
are skipped, so reporting a run twice (or as it progresses) never duplicates a point.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llamaduo.errors import LlamaduoError, MissingExtra
from llamaduo.report.loader import RunData
from llamaduo.report.registry import flatten
from llamaduo.report.spend import SpendRow, by_iteration, spend_by_stage

RUN_TAG = "llamaduo.run_id"
_BAD_KEY = re.compile(r"[^\w\-. /]")
MAX_PARAM_CHARS = 500  # older tracking servers refuse longer parameter values


def tracking_uri(config: Any) -> str:
    """The configured URI with a relative sqlite path or plain folder resolved against the project folder."""
    uri = config.report.mlflow_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(config.path(uri.removeprefix("sqlite:///")))
    if "://" not in uri and not uri.startswith("file:"):
        return config.path(uri).as_uri()
    return uri


def _client(config: Any) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise MissingExtra("mlflow", "mlflow") from None
    return MlflowClient(tracking_uri=tracking_uri(config))


def _experiment_id(client: Any, config: Any) -> str:
    name = config.report.mlflow_experiment
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    # Artifacts beside the project (not the current directory, MLflow's default for local stores).
    location = config.path(".llamaduo/mlflow-artifacts").as_uri()
    return client.create_experiment(name, artifact_location=location)


def metric_key(name: str) -> str:
    return _BAD_KEY.sub("_", name)


def run_metrics(run: RunData, spend: Sequence[SpendRow] = ()) -> dict[str, list[tuple[int, float]]]:
    """key -> [(iteration, value)]: the loop's per-iteration record (or the eval report's means when there is none),
    and `spend_usd` per iteration from the ledger's `spend` rows of this run."""
    out: dict[str, list[tuple[int, float]]] = {}
    dollars = by_iteration(list(spend))

    def add(key: str, step: int, value: float | None) -> None:
        if value is not None:
            out.setdefault(metric_key(key), []).append((step, float(value)))

    for it in ([run.baseline] if run.baseline else []) + run.iterations:
        if it.index is None:  # a separate baseline/ folder: no step of its own
            continue
        k = it.index
        if it.record:
            for key, s in it.record.metrics.items():
                add(key, k, s.mean)
                add(f"{key}.ci_low", k, s.ci_low)
                add(f"{key}.ci_high", k, s.ci_high)
            for key, s in it.record.judge_free.items():
                add(f"judge_free.{key}", k, s.mean)
            add("train_size", k, it.record.train_size)
            add("synthetic_total", k, it.record.synthetic_total)
            add("target_met", k, float(it.record.target_met))
        elif it.eval:
            for name, view in it.eval.metrics.items():
                add(f"{name}.mean", k, view.per_sample.mean)
            add("target_met", k, float(it.eval.target.passed))
        if it.record or it.eval:  # an evaluated iteration's spend is complete (a step is logged once)
            add("spend_usd", k, dollars.get(k, 0.0))
    return out


def log_run(config: Any, run: RunData, artifacts: Sequence[Path] = (), *, spend: list[SpendRow] | None = None) -> str:
    """Log `run` into MLflow and return the MLflow run id; spend comes from the ledger (`spend`, else read here)."""
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.exceptions import MlflowException
    except ImportError:
        raise MissingExtra("mlflow", "mlflow") from None

    try:
        client = _client(config)
        experiment = _experiment_id(client, config)
        found = client.search_runs([experiment], filter_string=f"tags.`{RUN_TAG}` = '{run.run_id}'", max_results=1)
        mlrun = found[0] if found else client.create_run(experiment, run_name=run.run_id, tags={RUN_TAG: run.run_id})
        run_id = mlrun.info.run_id
        logged = mlrun.data.params if found else {}
        params = [Param(metric_key(k)[:250], str(v)[:MAX_PARAM_CHARS]) for k, v in flatten(run.config).items()
                  if metric_key(k)[:250] not in logged]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(run_id, params=params[start:start + 100])
        metrics = []
        if spend is None:
            spend = spend_by_stage(config.path(config.service.cache_path), run.run_id)
        for key, points in run_metrics(run, spend).items():
            done = {m.step for m in client.get_metric_history(run_id, key)} if found else set()
            metrics += [Metric(key, value, 0, step) for step, value in points if step not in done]
        for start in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[start:start + 1000])
        client.log_batch(run_id, tags=[RunTag("llamaduo.status", run.status)])
        for path in [*artifacts, run.root / "manifest.json", run.root / "state.json"]:
            if Path(path).is_file():
                client.log_artifact(run_id, str(path))
        if run.status in ("done", "stopped", "failed"):
            client.set_terminated(run_id, "FAILED" if run.status == "failed" else "FINISHED")
        return run_id
    except (MlflowException, OSError) as exc:  # OSError: a local store whose folder cannot be created
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise LlamaduoError(f"MLflow tracking failed: {first}", "Check report.mlflow_uri, or set report.tracking=none") from None
