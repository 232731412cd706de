"""The `llamaduo` command: an explicit list of thin verbs over the Python API, and the error boundary."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from llamaduo import __version__
from llamaduo.cli import data_cmds, deploy_cmds, project, service_cmds, synth_cmd
from llamaduo.cli import eval_cmds
from llamaduo.cli import train_cmds
from llamaduo.cli import report_cmds
from llamaduo.cli import loop_cmds
from llamaduo.errors import LlamaduoError

app = typer.Typer(
    name="llamaduo",
    help="Move an application from a paid service LLM to a small local model that llamaduo fine-tunes, judges and deploys.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llamaduo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _state["debug"] = debug


# The command list. Each verb lives in a small module of this package.
app.command("init")(project.init)
app.add_typer(project.config_app, name="config")
app.add_typer(service_cmds.cache_app, name="cache")
app.command("cost")(service_cmds.cost)
app.add_typer(data_cmds.data_app, name="data")
app.command("synth")(synth_cmd.synth)
app.command("serve")(deploy_cmds.serve)
app.command("gateway")(deploy_cmds.gateway)
app.command("export")(deploy_cmds.export)
app.command("eval")(eval_cmds.eval_)
app.command("judge-check")(eval_cmds.judge_check)
app.command("train")(train_cmds.train)
app.command("infer")(train_cmds.infer)
app.command("report")(report_cmds.report)
app.add_typer(report_cmds.runs_app, name="runs")
app.command("run")(loop_cmds.run)
app.command("status")(loop_cmds.status)
app.command("demo")(loop_cmds.demo)


def main() -> None:
    """Entry point: run the CLI and turn known errors into one line and exit code 2."""
    _state["debug"] = "--debug" in sys.argv
    try:
        app(prog_name="llamaduo")
    except LlamaduoError as exc:
        if _state["debug"]:
            raise
        typer.secho(f"error: {exc.message}", err=True, fg=typer.colors.RED)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.secho("interrupted; rerun the same command to resume", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: still one line unless --debug
        if _state["debug"]:
            raise
        typer.secho(
            f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback and report it)",
            err=True,
            fg=typer.colors.RED,
        )
        sys.exit(1)
