"""`build_report(config, run_id)`: render a run's HTML report and Markdown summary into its folder, index it, and track it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from llamaduo.atomic import atomic_write_text
from llamaduo.report.html import render_html
from llamaduo.report.loader import latest_run_id, load_run
from llamaduo.report.markdown import render_markdown
from llamaduo.report.spend import spend_by_stage


class ReportResult(BaseModel):
    run_id: str
    status: str
    html_path: str
    markdown_path: str
    html_bytes: int
    seconds: float
    notices: list[str]
    mlflow_run_id: str | None = None


def runs_dir(config: Any) -> Path:
    return config.path(config.project.runs_dir)


def build_report(config: Any, run_id: str | None = None, out_dir: str | Path | None = None) -> ReportResult:
    """Write `report.html` and `report.md` (default: into `runs/<id>/report/`) and return where and how big."""
    started = time.perf_counter()
    folder = runs_dir(config)
    run = load_run(folder, run_id or latest_run_id(folder))
    spend = spend_by_stage(config.path(config.service.cache_path), run.run_id)
    from llamaduo.deploy.livemetrics import report_section

    live = report_section(config)  # the gateway's live traffic, when this project has judged any
    html = render_html(run, spend, config.report.samples, live[1] if live else "")
    markdown = render_markdown(run, spend) + ("\n" + live[0] if live else "")
    out = Path(out_dir) if out_dir else run.root / "report"
    html_path = atomic_write_text(out / "report.html", html)
    md_path = atomic_write_text(out / "report.md", markdown)
    from llamaduo.report.registry import open_registry

    with open_registry(config) as registry:
        registry.index_run(run)
    result = ReportResult(run_id=run.run_id, status=run.status, html_path=str(html_path), markdown_path=str(md_path),
                          html_bytes=len(html.encode("utf-8")), seconds=0.0, notices=run.notices)
    if config.report.tracking == "mlflow":
        from llamaduo.report.mlflow_tracking import log_run

        result.mlflow_run_id = log_run(config, run, [html_path, md_path], spend=spend)
    result.seconds = time.perf_counter() - started
    return result
