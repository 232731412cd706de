"""`llamaduo cache stats|clear` and `llamaduo cost`: the response cache and the spend ledger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from llamaduo.cli.common import ConfigOpt, JsonOpt, SetOpt, get_config
from llamaduo.errors import LlamaduoError

cache_app = typer.Typer(help="Inspect or empty the persistent service-LLM response cache.", no_args_is_help=True)


def _store(config, set_):  # type: ignore[no-untyped-def]
    """The project's service database, or None when no service call was ever made (nothing is created then)."""
    from llamaduo.service.cache import ServiceStore

    cfg = get_config(config, set_)
    path = cfg.path(cfg.service.cache_path)
    return ServiceStore(path) if path.is_file() else None


def _empty_stats() -> dict:
    return {"path": "(none yet)", "entries": 0, "text_bytes": 0, "file_bytes": 0, "by_model": [], "ledger_rows": 0, "cache_hits": 0, "pending_batch_jobs": 0}


@cache_app.command("stats")
def cache_stats(config: ConfigOpt = None, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Show how many replies are cached, per model, and the file size."""
    store = _store(config, set_)
    if store is None:
        stats = _empty_stats()
    else:
        try:
            stats = store.stats()
        finally:
            store.close()
    if as_json:
        typer.echo(json.dumps(stats, indent=2))
        return
    console = Console()
    console.print(f"cache [bold]{stats['path']}[/]: {stats['entries']} replies, {stats['file_bytes'] / 1e6:.2f} MB on disk")
    console.print(f"ledger: {stats['ledger_rows']} rows, {stats['cache_hits']} cache hits; pending batch jobs: {stats['pending_batch_jobs']}")
    if stats["by_model"]:
        table = Table("provider", "model", "replies")
        for row in stats["by_model"]:
            table.add_row(row["provider"], row["model"], str(row["entries"]))
        console.print(table)


@cache_app.command("clear")
def cache_clear(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: Annotated[str | None, typer.Option(help="Only drop the replies of this model id.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete cached replies (the spend ledger is kept); the next run asks the service LLM again and pays again."""
    if not yes and not typer.confirm("Cached replies will be asked (and paid for) again. Clear the cache?"):
        raise typer.Exit(1)
    from llamaduo.service.budget import forget_budgets

    store = _store(config, set_)
    removed = 0
    if store is not None:
        try:
            removed = store.clear(model)
        finally:
            store.close()
    forget_budgets()
    typer.echo(f"removed {removed} cached repl{'y' if removed == 1 else 'ies'}")


def cost(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    run: Annotated[str | None, typer.Option("--run", help="Only this run id.")] = None,
    by: Annotated[str, typer.Option("--by", help="Group by stage, role, model, run or iteration (of a loop run).")] = "stage",
    as_json: JsonOpt = False,
    project: Annotated[bool, typer.Option("--project", help="Project service-LLM vs local hosting cost and the break-even month instead (docs/report.md).", rich_help_panel="Projection")] = False,
    preset: Annotated[str | None, typer.Option("--preset", help="Start from a scenario: light or heavy (the paper's structure; put in today's prices).", rich_help_panel="Projection")] = None,
    service_model: Annotated[str | None, typer.Option("--service-model", help="Priced service model (default: the preset's, else service.generator.model).", rich_help_panel="Projection")] = None,
    requests_per_month: Annotated[float | None, typer.Option("--requests-per-month", help="Requests the app sends a month.", rich_help_panel="Projection")] = None,
    input_tokens: Annotated[float | None, typer.Option("--input-tokens", help="Average prompt tokens (default: measured on the coverage data).", rich_help_panel="Projection")] = None,
    output_tokens: Annotated[float | None, typer.Option("--output-tokens", help="Average answer tokens (default: measured on the coverage data).", rich_help_panel="Projection")] = None,
    gpu_hourly: Annotated[float | None, typer.Option("--gpu-hourly", help="USD per GPU hour.", rich_help_panel="Projection")] = None,
    throughput: Annotated[float | None, typer.Option("--throughput", help="Generated tokens/s one GPU sustains (default: measured in --run, else the preset's).", rich_help_panel="Projection")] = None,
    utilisation: Annotated[float | None, typer.Option("--utilisation", help="Share of GPU capacity the traffic uses, in (0, 1].", rich_help_panel="Projection")] = None,
    on_demand: Annotated[bool, typer.Option("--on-demand", help="Bill only busy GPU hours instead of always-on servers.", rich_help_panel="Projection")] = False,
    one_off: Annotated[float | None, typer.Option("--one-off", help="One-off migration cost in USD (default: --run's spend plus GPU time, else the preset's).", rich_help_panel="Projection")] = None,
    months: Annotated[int, typer.Option("--months", help="Months to project.", rich_help_panel="Projection")] = 12,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write the Fig. 4 style PNG here.", rich_help_panel="Projection")] = None,
) -> None:
    """Sum service-LLM spend from the ledger: requests, cache hits, tokens and dollars; or, with --project, project the break-even."""
    if project or preset:
        from llamaduo.cli.report_cmds import show_projection

        return show_projection(get_config(config, set_), plot=plot, as_json=as_json, preset=preset, service_model=service_model,
                               requests_per_month=requests_per_month, input_tokens=input_tokens, output_tokens=output_tokens,
                               gpu_hourly_usd=gpu_hourly, throughput_tps=throughput, utilisation=utilisation, on_demand=on_demand,
                               one_off_usd=one_off, run_id=run, months=months)
    from llamaduo.service.ledger import GROUPS, spend

    if by not in GROUPS:
        raise LlamaduoError(f"--by {by} is not a grouping", f"Use --by {', '.join(GROUPS[:-1])} or {GROUPS[-1]}.")
    store = _store(config, set_)
    rows = []
    if store is not None:
        try:
            rows = spend(store, run=run, by=by)  # type: ignore[arg-type]
        finally:
            store.close()
    if run and not rows:
        raise LlamaduoError(f"the ledger has no spend for run {run}", "Check the run id with `llamaduo cost --by run`.")
    total, unpriced = sum(r["cost_usd"] for r in rows), sum(r["unpriced_requests"] for r in rows)
    if as_json:
        typer.echo(json.dumps({"by": by, "run": run, "rows": rows, "total_usd": total, "unpriced_requests": unpriced}, indent=2))
        return
    # Paid calls to a model without a price are spend of unknown size: counted apart, never as $0.
    extra = ("unpriced",) if unpriced else ()
    table = Table(by, "requests", "cache hits", "input tok", "cached in", "output tok", *extra, "USD", title="service-LLM spend")
    for r in rows:
        label = "outside the loop" if by == "iteration" and r[by] is None else str(r[by])
        table.add_row(label, str(r["requests"]), str(r["cache_hits"]), str(r["input_tokens"]), str(r["cached_input_tokens"]), str(r["output_tokens"]),
                      *((str(r["unpriced_requests"]),) if unpriced else ()), f"{r['cost_usd']:.4f}")
    table.add_section()
    table.add_row("total", "", "", "", "", "", *((str(unpriced),) if unpriced else ()), f"{total:.4f}")
    Console().print(table)
    if unpriced:
        typer.echo(f"note: {unpriced} paid requests went to models without a known price and are not in the USD column; set service.prices.<model>.")
