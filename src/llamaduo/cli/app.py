"""The `llamaduo` command: an explicit list of thin verbs over the Python API, and the error boundary."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from llamaduo import __version__
from llamaduo.cli.lazy import LazyCommand, LazyGroup
from llamaduo.errors import LlamaduoError


class Commands(LazyGroup):
    """The command list: verb -> (module of this package, function or Typer, summary shown by `llamaduo --help`).

    A verb's module is imported only when that verb runs; tests/foundation/test_cli.py checks each summary
    against the verb's docstring and that `import llamaduo.cli` stays light.
    """

    lazy_commands = {
        "init": LazyCommand("project", "init", "Create a commented llamaduo.yaml with every setting at its default."),
        "config": LazyCommand("project", "config_app", "Inspect the resolved config."),
        "cache": LazyCommand("service_cmds", "cache_app", "Inspect or empty the persistent service-LLM response cache."),
        "cost": LazyCommand("service_cmds", "cost", "Sum service-LLM spend from the ledger: requests, cache hits, tokens and dollars; or, with --project, project the break-even."),
        "data": LazyCommand("data_cmds", "data_app", "Ingest, split and inspect the coverage dataset."),
        "synth": LazyCommand("synth_cmd", "synth", "Ask the generator for new pairs like the train data; keep those passing every gate; resumable."),
        "serve": LazyCommand("deploy_cmds", "serve", "Serve a local model over an OpenAI-compatible HTTP API (chat, completions, models, health, metrics)."),
        "gateway": LazyCommand("deploy_cmds", "gateway", "Run an OpenAI-compatible gateway in front of your app: capture traffic, shadow-test the local model, or serve it with fallback."),
        "export": LazyCommand("deploy_cmds", "export", "Export a trained run (merged safetensors, GGUF, or an Ollama Modelfile + GGUF), check parity, write a model card."),
        "eval": LazyCommand("eval_cmds", "eval_", "Judge a model's answers (similarity and precision, or pairwise), compute judge-free metrics and pass@k, check the target."),
        "judge-check": LazyCommand("eval_cmds", "judge_check", "Measure a judge's agreement with human labels (accuracy, Cohen's kappa, Spearman, Kendall); stored and shown beside its scores."),
        "train": LazyCommand("train_cmds", "train", "Fine-tune the local model (LoRA, QLoRA or full) on the train split; writes adapter/, merged/ and fingerprint.json."),
        "infer": LazyCommand("train_cmds", "infer", "Answer the test split with the local model (K samples per prompt); writes Answer rows as JSONL."),
        "report": LazyCommand("report_cmds", "report", "Write a self-contained HTML report (plots embedded) and a Markdown summary of a run."),
        "runs": LazyCommand("report_cmds", "runs_app", "The runs registry: list runs, show one, compare two."),
        "run": LazyCommand("loop_cmds", "run", "Run the LlamaDuo loop: train, infer, evaluate; synthesise and retrain until target, budget, plateau or max iterations."),
        "status": LazyCommand("loop_cmds", "status", "Show a run's stage, iteration, metrics so far, spend against budget and an ETA."),
        "demo": LazyCommand("loop_cmds", "demo", "The main job, offline on CPU: Dolly summarization, SmolLM2-135M student, a local stand-in service LLM, the full loop."),
        "doctor": LazyCommand("doctor_cmd", "doctor", "Check what works on this machine, one line per capability, with the fix for what does not."),
    }


app = typer.Typer(
    cls=Commands,
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
