"""`llamaduo run`, `llamaduo status` and `llamaduo demo`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from llamaduo.cli.common import ConfigOpt, JsonOpt, QuietOpt, SetOpt, get_config
from llamaduo.errors import LlamaduoError

RunIdOpt = Annotated[str | None, typer.Option("--run-id", help="Run folder name (default: project.name).", show_default=False)]


def run(
    config_path: Annotated[Path | None, typer.Argument(help="Config file (default: ./llamaduo.yaml).", show_default=False)] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    run_id: RunIdOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Resume the run (also the default when its folder exists).")] = False,
    force_new: Annotated[bool, typer.Option("--force-new", help="Start a new run even if one with this id exists.")] = False,
    from_capture: Annotated[bool, typer.Option("--from-capture", help="Start the next iteration from live traffic: add the live pairs the judge scored low to the data (as `llamaduo data from-live`), then start a new run from the current best model.")] = False,
    task: Annotated[str | None, typer.Option("--task", help="With --from-capture: the task of the live pairs (default: the dataset's only task).", show_default=False)] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Run the LlamaDuo loop: train, infer, evaluate; synthesise and retrain until target, budget, plateau or max iterations."""
    from llamaduo.loop.outcome import NotMeasured
    from llamaduo.loop.pipeline import Pipeline
    from llamaduo.loop.view import print_run

    console = Console(stderr=as_json, quiet=quiet and not as_json)
    cfg = get_config(config_path or config, set_, required=True)
    if from_capture:
        from llamaduo.deploy.drift import from_capture as next_from_capture

        cfg, drift, base = next_from_capture(cfg, task=task)
        console.print(f"from capture: {drift.low_pairs} live pairs below {drift.below:g} on {drift.metric} ({drift.added} new to raw "
                      f"{drift.raw_version}; train {drift.train_version}); training starts from {base}", markup=False)
        force_new = True
    pipeline = Pipeline(cfg, run_id=run_id, reporter=lambda m: console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {escape(m)}"))
    try:
        state = pipeline.run(force_new=force_new)
    except NotMeasured as void:
        # What was measured is still shown, then the one-line cause and fix, and a non-zero exit.
        if void.state is not None and not as_json:
            print_run(Console(), void.state, cfg)
        raise
    if as_json:
        typer.echo(json.dumps(state.model_dump(mode="json"), indent=2))
        return
    print_run(Console(), state, cfg)


def status(
    run_id: Annotated[str | None, typer.Argument(help="Run id (default: the newest loop run).", show_default=False)] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    live: Annotated[bool, typer.Option("--live", help="Show the gateway's live traffic instead: mode, live scores with 95% CIs, fallback and error rates, latency, judge spend.")] = False,
) -> None:
    """Show a run's stage, iteration, metrics so far, spend against budget and an ETA."""
    if live:
        from llamaduo.deploy.livemetrics import live_status

        for line in live_status(get_config(config, set_), as_json=as_json):
            typer.echo(line)
        return
    from llamaduo.loop.outcome import spend_rows, unpriced_requests
    from llamaduo.loop.pipeline import find_run
    from llamaduo.loop.state import LoopState
    from llamaduo.loop.view import print_run, usd

    cfg = get_config(config, set_)
    folder = find_run(cfg, run_id)
    state = LoopState.load(folder)
    if state is None:  # removed between the lookup and the read
        raise LlamaduoError(f"{folder} has no state.json", "Check the run id with `llamaduo runs list`.")
    if state.status == "running" and not _is_locked(folder):
        state.status = "interrupted"  # nobody holds the run's lock: its process died; `llamaduo run` resumes it
    rows = spend_rows(cfg, state.run_id)
    spent, unpriced = sum(r.cost_usd for r in rows), unpriced_requests(rows)
    eta = _eta(state, cfg.loop.max_iterations)
    if as_json:
        typer.echo(json.dumps({**state.model_dump(mode="json"), "spend_usd": spent, "unpriced_requests": unpriced,
                               "budget_usd": cfg.service.budget_usd, "eta_s": eta}, indent=2))
        return
    console = Console()
    print_run(console, state, cfg, gains=False)
    budget = f" of ${cfg.service.budget_usd:.2f}" if cfg.service.budget_usd else " (no budget cap)"
    console.print(f"iteration {state.iteration} of at most {cfg.loop.max_iterations}; spend ${usd(spent, unpriced)}{budget}", markup=False)
    if eta is not None and state.status == "running":
        console.print(f"ETA: about {eta / 60:.0f} min if it runs all iterations")


def _is_locked(folder: Path) -> bool:
    from llamaduo.loop.lock import RunLock

    try:
        with RunLock(folder):
            return False
    except LlamaduoError:
        return True


def _eta(state, max_iterations: int) -> float | None:  # type: ignore[no-untyped-def]
    done = [r for r in state.iterations if r.iteration > 0]
    if not done or state.status != "running":
        return None
    per_iteration = sum(r.seconds for r in done) / len(done)
    return per_iteration * max(0, max_iterations - len(done))


def demo(
    quick: Annotated[bool, typer.Option("--quick", help="A smaller run for smoke tests (48 rows, 12 test prompts: too few to tell a gain from noise).")] = False,
    workdir: Annotated[Path, typer.Option(help="Folder for the demo project.")] = Path("demo-project"),
    shared_data: Annotated[Path | None, typer.Option(help="The shared data folder (default: ../shared/data).", show_default=False)] = None,
) -> None:
    """The main job, offline on CPU: Dolly summarization, SmolLM2-135M student, a local stand-in service LLM, the full loop."""
    from llamaduo.loop.demo import run_demo

    run_demo(workdir, quick=quick, shared_data=shared_data, console=Console())
