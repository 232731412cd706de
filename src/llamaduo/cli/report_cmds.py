"""`llamaduo report`, `llamaduo runs list|show|compare`, and the cost projection printed by `llamaduo cost --project`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Column, Table

from llamaduo.cli.common import ConfigOpt, JsonOpt, SetOpt, get_config

runs_app = typer.Typer(help="The runs registry: list runs, show one, compare two.", no_args_is_help=True)


def report(
    run: Annotated[str | None, typer.Argument(help="Run id (default: the newest run).", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for report.html and report.md (default: runs/<id>/report/).")] = None,
    curve: Annotated[Path | None, typer.Option("--curve", help="Render a migration curve (curve.json of benchmarks/migration_curve.py) instead of a run: curve.html, curve.md and curve.png, beside it or in --out.", show_default=False)] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a self-contained HTML report (plots embedded) and a Markdown summary of a run."""
    if curve is not None:
        _curve_report(curve, out, run, as_json)
        return
    from llamaduo.report.api import build_report

    result = build_report(get_config(config, set_), run, out)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    for notice in result.notices:
        typer.secho(f"note: {notice}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"run {result.run_id} ({result.status}): {result.html_path} ({result.html_bytes / 1024:.0f} KiB, {result.seconds:.1f} s)")
    typer.echo(f"summary: {result.markdown_path}")
    if result.mlflow_run_id:
        typer.echo(f"logged to MLflow run {result.mlflow_run_id}")


def _curve_report(path: Path, out: Path | None, run: str | None, as_json: bool) -> None:
    from llamaduo.errors import LlamaduoError
    from llamaduo.report.curve import TASKS_TO_BEAT, write_curve_report

    if run is not None:
        raise LlamaduoError(f"--curve renders a migration curve, not run {run}", "Pass either a run id or --curve PATH, not both.")
    result = write_curve_report(path, out)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    typer.echo(f"migration curve: {result.html_path} (plot {result.png_path}, table {result.markdown_path})")
    for verdict in result.verdicts:
        typer.echo(f"  {verdict.text}")
    claim = "not measured yet" if result.passed is None else ("holds" if result.passed else "does NOT hold")
    typer.echo(f"claim (the largest size beats the base model on at least {TASKS_TO_BEAT} tasks, non-overlapping 95% CIs): {claim}")


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _usd(summary: Any) -> str:
    """A run's spend as `llamaduo cost --run` prints it (from the ledger), marking unpriced calls left out of it."""
    return f"{summary.spend_usd:.4f}" + (f" + {summary.unpriced_requests} unpriced" if summary.unpriced_requests else "")


def _target(summary: Any) -> str:
    if summary.stop_reason == "not_measured":
        return "not measured"
    return "met" if summary.target_met else ("missed" if summary.iterations else "–")


def _registry(config: Any) -> Any:
    from llamaduo.report.registry import open_registry

    return open_registry(config)


@runs_app.command("list")
def runs_list(config: ConfigOpt = None, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """List every run of the project, newest first, with its status and headline metrics."""
    cfg = get_config(config, set_)
    with _registry(cfg) as registry:
        problems = registry.refresh(cfg.path(cfg.project.runs_dir))
        runs = registry.list()
    if as_json:
        typer.echo(json.dumps({"runs": [r.model_dump(exclude={"config"}) for r in runs], "unreadable": problems}, indent=2))
        return
    for line in problems:
        typer.secho(f"warning: {line}", fg=typer.colors.YELLOW, err=True)
    if not runs:
        typer.echo(f"no runs in {cfg.path(cfg.project.runs_dir)}")
        return
    names = sorted({k for r in runs for k in r.metrics if k.endswith(".mean")})[:4]
    # The run id is what users copy into other commands: never let a narrow terminal crop it.
    run_column = Column("run", no_wrap=True, min_width=max(len(r.run_id) for r in runs))
    table = Table(run_column, "created", "status", "iterations", "best", "target", *names, "service USD")
    for r in runs:
        table.add_row(r.run_id, (r.created_at or "")[:19], r.status, str(r.iterations), "" if r.best_iteration is None else str(r.best_iteration),
                      _target(r), *[_fmt(r.metrics.get(n)) for n in names], _usd(r))
    Console().print(table)


@runs_app.command("show")
def runs_show(
    run: Annotated[str, typer.Argument(help="Run id.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one run: status, per-metric results of its best iteration against the base model, and spend."""
    from llamaduo.report.registry import ensure_indexed

    cfg = get_config(config, set_)
    with _registry(cfg) as registry:
        ensure_indexed(registry, cfg.path(cfg.project.runs_dir), run)
        summary = registry.get(run)
    if as_json:
        typer.echo(summary.model_dump_json(indent=2))
        return
    console = Console()
    console.print(f"[bold]{summary.run_id}[/] {summary.status} (stage {summary.stage or '–'}), {summary.iterations} iterations,"
                  f" best {summary.best_iteration if summary.best_iteration is not None else '–'},"
                  f" target {_target(summary)}, service ${_usd(summary)}", markup=True)
    console.print(f"folder: {summary.root}", markup=False)
    table = Table("metric", "fine-tuned", "base model")
    for name in sorted(set(summary.metrics) | set(summary.baseline)):
        table.add_row(name, _fmt(summary.metrics.get(name)), _fmt(summary.baseline.get(name)))
    console.print(table)


@runs_app.command("compare")
def runs_compare(
    a: Annotated[str, typer.Argument(help="First run id.")],
    b: Annotated[str, typer.Argument(help="Second run id.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare two runs side by side: metrics (with B - A) and every config value that differs."""
    from llamaduo.report.registry import ensure_indexed

    cfg = get_config(config, set_)
    with _registry(cfg) as registry:
        for run_id in (a, b):
            ensure_indexed(registry, cfg.path(cfg.project.runs_dir), run_id)
        comparison = registry.compare(a, b)
    if as_json:
        typer.echo(comparison.model_dump_json(indent=2, exclude={"a": {"config"}, "b": {"config"}}))
        return
    console = Console()
    metrics = Table("metric", a, b, "B - A", title="metrics (best iteration)")
    for name, va, vb, delta in comparison.metrics:
        metrics.add_row(name, _fmt(va), _fmt(vb), "–" if delta is None else f"{delta:+.2f}")
    metrics.add_section()
    spent = comparison.b.spend_usd - comparison.a.spend_usd
    metrics.add_row("service USD", _usd(comparison.a), _usd(comparison.b), f"{spent:+.4f}")
    console.print(metrics)
    if not comparison.config_diff:
        console.print("configs are identical")
        return
    diff = Table("config key", a, b, title="config differences")
    for key, va, vb in comparison.config_diff:
        diff.add_row(key, json.dumps(va, default=str), json.dumps(vb, default=str))
    console.print(diff)


def show_projection(config: Any, *, plot: Path | None, as_json: bool, **inputs: Any) -> None:
    """Print (and optionally plot) the service-vs-local projection; shared by `llamaduo cost --project`."""
    from llamaduo.atomic import atomic_write_bytes
    from llamaduo.report.costs import build_projection

    projection, notes = build_projection(config, **inputs)
    if plot is not None:
        from llamaduo.report.plots import png_bytes, projection_figure

        atomic_write_bytes(plot, png_bytes(projection_figure(projection)))
    if as_json:
        typer.echo(json.dumps({"projection": projection.model_dump(mode="json"), "notes": notes, "plot": str(plot) if plot else None}, indent=2))
        return
    for note in notes:
        typer.echo(f"note: {note}")
    for line in projection.summary_lines():
        typer.echo(line)
    table = Table("month", "service cumulative", "local cumulative", title="cumulative cost (USD)")
    for m, (s, loc) in enumerate(zip(projection.service_cumulative, projection.local_cumulative, strict=True), 1):
        table.add_row(str(m), f"{s:,.2f}", f"{loc:,.2f}")
    Console().print(table)
    if plot is not None:
        typer.echo(f"plot: {plot}")
