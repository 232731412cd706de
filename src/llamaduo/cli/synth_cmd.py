"""`llamaduo synth -n N`: generate synthetic pairs until N pass the quality gates."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from llamaduo.cli.common import ConfigOpt, JsonOpt, QuietOpt, SetOpt, get_config


def synth(
    n: Annotated[int, typer.Option("-n", "--num", min=1, help="Accepted pairs wanted (shared evenly across tasks).")],
    task: Annotated[str | None, typer.Option("--task", "-t", help="Only this task (default: synth.tasks, else every train task).")] = None,
    run: Annotated[str | None, typer.Option("--run", help="Run id to create or resume (default: resume the newest unfinished synth run with the same -n and tasks).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Ask the generator for new pairs like the train data; keep those passing every gate; resumable."""
    from llamaduo.synth.engine import run_synth

    report = run_synth(get_config(config, set_, required=True), n, task=task, run=run)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    console = Console()
    if not quiet:
        table = Table("gate", "checked", "passed", "dropped", title=f"gate report (run {report.run_id})")
        for gate in report.gate_report.gates:
            dropped = ", ".join(f"{v} {k}" for k, v in gate.dropped.items()) or "-"
            table.add_row(gate.gate, str(gate.checked), str(gate.passed), dropped)
        console.print(table)
        if report.gate_report.invalid_replies:
            console.print("invalid generator replies: " + ", ".join(f"{v} {k}" for k, v in report.gate_report.invalid_replies.items()))
    console.print(
        f"accepted {report.accepted}/{report.target} ({report.stop_reason}) from {report.calls} calls, "
        f"{report.pairs_generated} pairs generated, ${report.cost_usd:.4f}; synthetic version {report.synthetic_version}"
    )
