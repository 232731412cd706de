"""Config of reports: where the runs index lives, how many samples a report shows, and optional MLflow tracking."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llamaduo.configbase import Section


class ReportConfig(Section):
    """`llamaduo report`, `llamaduo runs` and experiment tracking."""

    samples: int = Field(12, ge=0)
    """Side-by-side samples (instruction, reference, local answer, scores, judge reasons) shown per iteration."""
    registry_path: str = ".llamaduo/runs.sqlite"
    """SQLite index of runs used by `llamaduo runs`, relative to the project folder."""
    tracking: Literal["none", "mlflow"] = "none"
    """`mlflow`: `llamaduo report` also logs params, per-iteration metrics and the report files to MLflow (needs the `mlflow` extra)."""
    mlflow_uri: str = "sqlite:///.llamaduo/mlflow.db"
    """MLflow tracking URI; a relative `sqlite:///` path or a plain folder resolves against the project folder."""
    mlflow_experiment: str = "llamaduo"
    """MLflow experiment the runs are logged under."""
