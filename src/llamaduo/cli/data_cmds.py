"""`llamaduo data ingest|split|stats|show`: the coverage dataset verbs."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from llamaduo.cli.common import ConfigOpt, JsonOpt, QuietOpt, SetOpt, get_config

data_app = typer.Typer(help="Ingest, split and inspect the coverage dataset.", no_args_is_help=True)


@data_app.command("ingest")
def ingest_cmd(
    sources: Annotated[list[str] | None, typer.Argument(help="Files, saved `datasets` folders or hub ids (default: data.sources).", show_default=False)] = None,
    task: Annotated[str | None, typer.Option("--task", "-t", help="Task of the given files (summarization, classification, closed_qa, coding, ...); with --task-field, of rows without that field.")] = None,
    task_field: Annotated[str | None, typer.Option("--task-field", help="Take each row's task from this field: a column or a dotted path (`dataset`, `metadata.task`).", show_default=False)] = None,
    fmt: Annotated[str | None, typer.Option("--format", "-f", help="Force a format: jsonl, json, csv, parquet, hf, hub, chat, openai_log, sharegpt, alpaca, dolly, pair, or container:layout.")] = None,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Leave invalid rows out and list them, instead of stopping at the first.")] = False,
    replace: Annotated[bool, typer.Option("--replace", help="Start the raw split afresh instead of adding to it.")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Read coverage data in any supported format and store it as a new raw version."""
    from llamaduo.data.ingestion import ingest

    report = ingest(get_config(config, set_), sources or None, task=task, task_field=task_field, fmt=fmt, skip_invalid=skip_invalid, replace=replace)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    console = Console()
    if not quiet:
        for src in report.sources:
            tasks = f"task {src.task}" if not src.task_field else "tasks " + (", ".join(f"{t} {n}" for t, n in src.tasks.items()) or "none")
            console.print(f"{src.path}: {src.container}/{src.layout}, {src.rows} rows read, {src.kept} kept ({tasks})", markup=False)
        for reason, count in report.dropped.items():
            console.print(f"  dropped {count} {reason}")
        for issue in report.invalid:
            console.print(f"  invalid {issue.location}: {issue.reason}", markup=False)
        if report.invalid_count > len(report.invalid):
            console.print(f"  ... and {report.invalid_count - len(report.invalid)} more invalid rows")
    console.print(f"raw version {report.version}: {report.total} rows ({report.added} new, {report.invalid_count} invalid skipped)")


@data_app.command("from-live")
def from_live_cmd(
    task: Annotated[str | None, typer.Option("--task", "-t", help="Task of the live pairs (default: the dataset's only task).", show_default=False)] = None,
    below: Annotated[float | None, typer.Option("--below", help="Score under which a pair counts as drift (default: the policy's coverage threshold, else 70).", show_default=False)] = None,
    metric: Annotated[str | None, typer.Option("--metric", help="The live score compared with --below (default: the policy target's metric, else precision).", show_default=False)] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add the live pairs the gateway's judge scored low to the data, the service's answers as references; then split (test decontamination as usual)."""
    from llamaduo.deploy.drift import drift_to_data

    report = drift_to_data(get_config(config, set_), task=task, metric=metric, below=below)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    dropped = ", ".join(f"{k} {v}" for k, v in report.dropped.items()) or "none"
    typer.echo(f"{report.low_pairs} live pairs below {report.below:g} on {report.metric} -> {report.file}")
    typer.echo(f"raw version {report.raw_version} ({report.added} new, task {report.task}); train version {report.train_version} (dropped: {dropped})")


@data_app.command("split")
def split_cmd(config: ConfigOpt = None, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Split raw data into train and a per-task test split; the test split is frozen once created."""
    from llamaduo.data.splitting import split

    report = split(get_config(config, set_))
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    table = Table("task", "raw", "test", "train", title=f"train {report.train_version} / test {report.test_version}")
    for task, counts in report.tasks.items():
        table.add_row(task, str(counts["raw"]), str(counts["test"]), str(counts["train"]))
    console = Console()
    console.print(table)
    dropped = ", ".join(f"{v} {k}" for k, v in report.dropped.items()) or "none"
    frozen = f"newly frozen for {', '.join(report.new_test_tasks)}" if report.new_test_tasks else "reused as frozen"
    console.print(f"test split {frozen}; hash {report.test_hash[:16]}; dropped from train: {dropped}")


@data_app.command("stats")
def stats_cmd(
    tokenizer: Annotated[str | None, typer.Option("--tokenizer", help="A tokenizer.json (file or folder) or `minilm` for exact token counts (default: regex estimate).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Counts per task, split and source, and token-length percentiles of prompts and answers."""
    from llamaduo.data.stats import dataset_stats

    report = dataset_stats(get_config(config, set_), tokenizer)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    console = Console()
    if not report.splits:
        console.print(f"the store {report.store} is empty; run `llamaduo data ingest`")
        return
    table = Table("split", "task", "rows", "prompt p50/p90/p99/max", "answer p50/p90/p99/max", title=f"tokens: {report.tokenizer}")
    for split, stats in report.splits.items():
        for task, ts in stats.tasks.items():
            p, a = ts.prompt_tokens, ts.answer_tokens
            table.add_row(split, task, str(ts.rows), f"{p.p50}/{p.p90}/{p.p99}/{p.max}", f"{a.p50}/{a.p90}/{a.p99}/{a.max}")
    console.print(table)
    console.print("versions: " + ", ".join(f"{split} {stats.version}" for split, stats in report.splits.items()))
    tooled = [(split, task, ts) for split, stats in report.splits.items() for task, ts in stats.tasks.items() if ts.with_tools]
    if tooled:
        tools = Table("split", "task", "offer tools", "answer with a call", "calls per function", title="tool calling")
        for split, task, ts in tooled:
            shown = ", ".join(f"{name} {n}" for name, n in list(ts.functions.items())[:5]) + (", ..." if len(ts.functions) > 5 else "")
            tools.add_row(split, task, str(ts.with_tools), str(ts.tool_answers), shown)
        console.print(tools)
    sources = Table("split", "source", "rows", title="sources")
    for split, stats in report.splits.items():
        for source, count in stats.sources.items():
            sources.add_row(split, source, str(count))
    console.print(sources)
    console.print(f"frozen test hash: {report.test_hash or 'not split yet'}")


@data_app.command("show")
def show_cmd(
    split: Annotated[str, typer.Argument(help="raw, train, test or synthetic.")] = "train",
    n: Annotated[int, typer.Option("-n", min=1, help="How many rows.")] = 3,
    task: Annotated[str | None, typer.Option("--task", "-t", help="Only this task.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a few rows of a split."""
    from llamaduo.data.store import DatasetStore
    from llamaduo.errors import LlamaduoError

    cfg = get_config(config, set_)
    store = DatasetStore(cfg.path(cfg.data.store))
    rows = [e for e in store.examples(split) if task is None or e.task == task][:n]
    if not rows:
        raise LlamaduoError(f"no rows in split {split!r}{f' for task {task!r}' if task else ''}", "Run `llamaduo data ingest` and `llamaduo data split`.")
    if as_json:
        typer.echo(json.dumps([e.model_dump(mode="json") for e in rows], indent=2, ensure_ascii=False))
        return
    console = Console()
    for example in rows:
        body = "\n\n".join(f"[bold]{m.role}[/bold]: {_clip(m.text)}" for m in example.messages)
        if example.tools:
            body = f"[bold]tools[/bold]: {', '.join(t['function']['name'] for t in example.tools)}\n\n{body}"
        meta = ", ".join(f"{k}={v}" for k, v in example.metadata.items() if k not in ("provenance",))
        console.print(Panel(body, title=f"{example.id} · {example.task} · {example.source}", subtitle=meta[:120] or None))


def _clip(text: str, limit: int = 600) -> str:
    from rich.markup import escape

    return escape(text if len(text) <= limit else text[:limit] + f" … [{len(text) - limit} more chars]")
