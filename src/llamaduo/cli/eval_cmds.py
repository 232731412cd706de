"""`llamaduo eval` and `llamaduo judge-check`: thin verbs over `llamaduo.evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from llamaduo.cli.common import ConfigOpt, JsonOpt, QuietOpt, SetOpt, get_config
from llamaduo.errors import LlamaduoError

ANSWERS_FILE = "answers.jsonl"


def eval_(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    answers: Annotated[Path | None, typer.Option("--answers", help=f"JSONL of answers written by infer (default: <run>/{ANSWERS_FILE}).", show_default=False)] = None,
    run: Annotated[str | None, typer.Option("--run", help="Run id to read answers from and write results into (default: a new run).", show_default=False)] = None,
    iteration: Annotated[int, typer.Option("--iteration", min=0, help="Loop iteration these answers belong to.")] = 0,
    metric: Annotated[list[str] | None, typer.Option("--metric", help="Judge-free metric to compute (repeatable; default: evaluate.metrics).", show_default=False)] = None,
    mode: Annotated[str | None, typer.Option("--mode", help="pointwise or pairwise (default: evaluate.mode).", show_default=False)] = None,
    no_judge: Annotated[bool, typer.Option("--no-judge", help="Skip the service-LLM judges: judge-free metrics only, no cost.")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Judge a model's answers (similarity and precision, or pairwise), compute judge-free metrics and pass@k, check the target."""
    from llamaduo.evaluate.api import check_inputs, evaluate
    from llamaduo.runs import RunFolder, new_run_id

    overrides = list(set_ or [])
    if metric:
        overrides.append(f"evaluate.metrics=[{','.join(metric)}]")
    if mode:
        overrides.append(f"evaluate.mode={mode}")
    if no_judge:
        overrides.append("evaluate.judge=false")
    cfg = get_config(config, overrides)
    runs_dir = cfg.path(cfg.project.runs_dir)
    folder = RunFolder.open(runs_dir, run) if run else None
    path = answers or (folder.path(ANSWERS_FILE) if folder else None)
    if path is None:
        raise LlamaduoError("no answers to evaluate were named", "Pass --answers FILE, or --run RUN whose folder holds answers.jsonl")
    rows = read_answers(path)
    check_inputs(cfg, rows)  # every input error surfaces before a run folder or a paid call exists
    if cfg.evaluate.judge:
        _open_judges(cfg)
    folder = folder or RunFolder.create(runs_dir, cfg, run_id=new_run_id("eval"))
    report = evaluate(cfg, rows, run=folder, iteration=iteration)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    print_report(report, quiet=quiet)
    typer.echo(f"results in {folder.path(f'eval/iter-{iteration}')}")


def _open_judges(cfg: Any) -> None:
    """Open and close each judge's client once: a missing API key is reported before a run folder is made."""
    from llamaduo.service import open_service, run_sync

    for index in range(len(cfg.service.judge)):
        run_sync(open_service(cfg, "judge", index=index).aclose())


def read_answers(path: Path) -> list[Any]:
    """Answer rows of a JSONL file; a bad row is a one-line error naming its line."""
    from pydantic import ValidationError

    from llamaduo.records import Answer

    if not path.is_file():
        raise LlamaduoError(f"answers file {path} does not exist", "Run `llamaduo infer` first or check --answers")
    rows = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(Answer.model_validate_json(line))
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"]) or "row"
                raise LlamaduoError(f"{path} line {number}: {where}: {err['msg']}", "Each line must be an Answer written by infer") from None
    return rows


def print_report(report: Any, *, quiet: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    trust = {j.index: j for j in report.judges}
    if not quiet:
        for j in trust.values():
            shown = _trust_line(j.trust) if j.trust else "not checked: run `llamaduo judge-check --judge %d`" % j.index
            console.print(f"[bold]{j.label}[/bold]  trust: {shown}")
        table = Table(title=f"iteration {report.iteration}: {report.answers} answers, {report.prompts} prompts x {report.samples_per_prompt}")
        for col in ("metric", "view", "n", "mean [95% CI]", "median", *(f"cov@{t}" for t in _thresholds(report))):
            table.add_column(col)
        for name, view in report.metrics.items():
            for label, summary in (("per answer", view.per_sample), ("prompt mean", view.per_prompt_mean), ("best of K", view.best_of_k)):
                if summary is None or not summary.n:
                    continue
                ci = summary.interval("mean")
                cov = [f"{100 * summary.coverage.get(t, 0):.0f}%" for t in _thresholds(report)]
                shown = f"{summary.mean:.1f} " + (f"[{ci[0]:.1f}, {ci[1]:.1f}]" if ci else "[CI unavailable]")
                table.add_row(name, label, str(summary.n), shown, f"{summary.median:.1f}", *cov)
        console.print(table)
        if len(report.by_task) > 1:
            names = list(report.metrics)
            per_task = Table(title="per task (mean over answers)")
            for col in ("task", *names):
                per_task.add_column(col)
            for task, summaries in report.by_task.items():
                per_task.add_row(task, *(f"{summaries[n].mean:.1f}" if n in summaries and summaries[n].n else "-" for n in names))
            console.print(per_task)
        if report.pairwise:
            p = report.pairwise
            flip = "n/a" if p.flip_rate is None else f"{100 * p.flip_rate:.0f}%"
            console.print(f"pairwise vs reference: win {100 * p.win:.0f}%  tie {100 * p.tie:.0f}%  loss {100 * p.loss:.0f}%  order flips {flip}")
        for name, figures in report.offline_trust.items():
            console.print(f"{name} trust: {_trust_line(figures)}")
        f = report.failures
        if f.total_judgments or f.sandbox:
            console.print(f"failed judgments: {f.judgments}/{f.total_judgments} {f.by_reason or ''}  sandbox non-passes: {f.sandbox or 0}")
        for w in report.warnings:
            console.print(f"[yellow]warning:[/yellow] {w}")
    colour = "green" if report.target.passed else "red"
    console.print(f"[{colour}]{report.target.explanation}[/{colour}]")


def _thresholds(report: Any) -> list[str]:
    first = next(iter(report.metrics.values()), None)
    return list(first.per_sample.coverage) if first else []


def _trust_line(figures: dict[str, Any]) -> str:
    keys = ("pandalm.accuracy", "pandalm.kappa", "llmbar.accuracy", "summeval.relevance.spearman", "summeval.precision.relevance.spearman",
            "summeval.consistency.spearman", "summeval.precision.consistency.spearman")
    parts = [f"{k} {figures[k]:.2f}" for k in keys if isinstance(figures.get(k), float)]
    return ", ".join(parts) + f" (n={figures.get('sample')}, {figures.get('checked_at', '')[:10]})"


def judge_check(
    judge: Annotated[str, typer.Option("--judge", help="Judge index in service.judge, or an offline scorer: rouge_l, embedding.")] = "0",
    sets: Annotated[str, typer.Option("--sets", help="Comma-separated human-labelled sets: pandalm, llmbar, summeval.")] = "pandalm,llmbar,summeval",
    sample: Annotated[int | None, typer.Option("--sample", min=1, help="Items per set (default: evaluate.judge_check_sample).", show_default=False)] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Folder holding pandalm_testset/, llmbar/, summeval/ (default: ../shared/data).", show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sample drawn from each set.")] = 0,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure a judge's agreement with human labels (accuracy, Cohen's kappa, Spearman, Kendall); stored and shown beside its scores."""
    from llamaduo.evaluate.calibration import judge_check as check

    cfg = get_config(config, set_)
    names = tuple(s.strip() for s in sets.split(",") if s.strip())
    report = check(cfg, judge, names, sample, data_dir=data, seed=seed)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    typer.echo(f"{report.scorer} ({report.kind}), {report.sample} items per set, seed {report.seed}")
    for name, figures in report.sets.items():
        shown = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
        typer.echo(f"  {name}: {shown}")
    for note in report.notes:
        typer.echo(f"  note: {note}")
    if report.cost_usd:
        typer.echo(f"  cost: ${report.cost_usd:.4f}")
