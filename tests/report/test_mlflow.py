"""`report.tracking: mlflow` against a local SQLite-backed MLflow store (no server)."""

from __future__ import annotations

import pytest

from llamaduo.loop.state import LoopState
from llamaduo.report.api import build_report
from llamaduo.report.loader import load_run
from tests.report.runfixture import make_run, project_config

mlflow = pytest.importorskip("mlflow", reason="the `mlflow` extra is not installed")
pytest.importorskip("alembic", reason="MLflow's SQLite store needs alembic (the `mlflow` extra)")
from llamaduo.report.mlflow_tracking import log_run  # noqa: E402


def test_params_metrics_and_artifacts_are_logged_once(tmp_path):
    config = project_config(tmp_path, report__tracking="mlflow", synth__seed=11)
    root = make_run(config, "tracked", iterations=2, n=4)
    first = build_report(config, "tracked")
    again = log_run(config, load_run(config.path("runs"), "tracked"))  # reporting again must not duplicate anything
    assert first.mlflow_run_id and first.mlflow_run_id == again

    from mlflow.tracking import MlflowClient

    assert (tmp_path / ".llamaduo/mlflow.db").is_file()  # the relative URI resolved against the project
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / '.llamaduo/mlflow.db'}")
    experiment = client.get_experiment_by_name("llamaduo")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["synth.seed"] == "11" and run.data.tags["llamaduo.run_id"] == "tracked"
    assert run.info.status == "FINISHED"
    state = LoopState.load(root)
    history = client.get_metric_history(run.info.run_id, "precision.mean")
    logged = sorted((m.step, m.value) for m in history)
    assert [step for step, _ in logged] == [0, 1, 2]  # step 0: the base model
    assert [value for _, value in logged] == pytest.approx([it.metrics["precision.mean"].mean for it in state.iterations])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "synthetic_total")] == [0, 1, 2]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "report.md", "manifest.json", "state.json"} <= artifacts
    assert str(tmp_path) in experiment.artifact_location  # artifacts beside the project, not in the cwd


def test_unreachable_tracking_uri_is_one_line(tmp_path):
    from llamaduo.errors import LlamaduoError

    (tmp_path / "a-file").write_text("not a folder")
    config = project_config(tmp_path, report__tracking="mlflow", report__mlflow_uri="sqlite:///a-file/mlflow.db")
    make_run(config, "lost", iterations=1, n=3)
    with pytest.raises(LlamaduoError, match="MLflow tracking failed") as err:
        log_run(config, load_run(config.path("runs"), "lost"))
    assert "\n" not in err.value.message
