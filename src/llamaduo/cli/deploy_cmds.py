"""`llamaduo serve`, `llamaduo gateway` and `llamaduo export`: thin wrappers over llamaduo.deploy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from llamaduo.cli.common import ConfigOpt, JsonOpt, SetOpt, get_config

HostOpt = Annotated[Optional[str], typer.Option("--host", help="Interface to listen on.", show_default=False)]
PortOpt = Annotated[Optional[int], typer.Option("--port", "-p", help="TCP port (0 picks a free one).", show_default=False)]


def _with(section, where: str, updates: dict):
    """The config section with the command-line values applied and validated like config values."""
    from pydantic import ValidationError

    from llamaduo.errors import ConfigError

    data = section.model_dump() | {k: v for k, v in updates.items() if v is not None}
    try:
        return type(section).model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"{where}.{'.'.join(str(x) for x in err['loc'])}: {err['msg']}", "See `llamaduo COMMAND --help`.") from None


def serve(
    model: Annotated[
        Optional[str],
        typer.Argument(help="A run id (a loop run serves its best iteration; with --engine llamacpp, the run's GGUF export), RUN:iter-K, "
                            "a model folder, a .gguf file (or a folder of one) or a hub id. None: the project's newest trained model.",
                       show_default=False),
    ] = None,
    engine: Annotated[
        Optional[str], typer.Option("--engine", "-e", help="auto, transformers, llamacpp or vllm.", show_default=False)
    ] = None,
    host: HostOpt = None,
    port: PortOpt = None,
    model_name: Annotated[Optional[str], typer.Option("--model-name", help="The id clients send as `model`.", show_default=False)] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Serve a local model over an OpenAI-compatible HTTP API (chat, completions, models, health, metrics)."""
    from llamaduo.deploy.serve import serve as run_serve

    cfg = get_config(config, set_)
    updates = {"engine": engine, "host": host, "port": port, "model_name": model_name}
    settings = _with(cfg.deploy.serve, "deploy.serve", updates)
    raise typer.Exit(run_serve(model, settings, runs_dir=cfg.path(cfg.project.runs_dir), announce=typer.echo, config=cfg))


def gateway(
    mode: Annotated[Optional[str], typer.Option("--mode", "-m", help="capture, shadow or local.", show_default=False)] = None,
    host: HostOpt = None,
    port: PortOpt = None,
    export_log: Annotated[
        Optional[Path],
        typer.Option("--export-log", help="Write the capture log as OpenAI chat-log JSONL (for `llamaduo data ingest`) and exit.", show_default=False),
    ] = None,
    satisfactory_only: Annotated[bool, typer.Option("--satisfactory-only", help="With --export-log: only pairs marked satisfactory.")] = False,
    dry_run_policy: Annotated[
        bool, typer.Option("--dry-run-policy", help="Replay the capture store's history through deploy.gateway.policy, print the transitions it would make beside the recorded ones, and exit.")
    ] = False,
    set_mode: Annotated[
        Optional[str], typer.Option("--set-mode", help="Record a manual mode change (shadow, canary or local) in the capture store for every replica, and exit.", show_default=False)
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Run an OpenAI-compatible gateway in front of your app: capture traffic, shadow-test the local model, or serve it with fallback."""
    from llamaduo.deploy.gateway_run import open_store, run_gateway

    cfg = get_config(config, set_)
    settings = _with(cfg.deploy.gateway, "deploy.gateway", {"mode": mode, "host": host, "port": port})
    if dry_run_policy or set_mode is not None:
        from llamaduo.deploy.policy import dry_run, set_mode_by_hand

        for line in (dry_run(settings, cfg.workdir) if dry_run_policy else [set_mode_by_hand(settings, cfg.workdir, set_mode)]):
            typer.echo(line)
        return
    if export_log is not None:
        store = open_store(settings, cfg.workdir)
        try:
            count = store.export_jsonl(export_log, only_satisfactory=satisfactory_only)
        finally:
            store.close()
        typer.echo(f"wrote {count} captured pairs to {export_log}")
        return
    raise typer.Exit(run_gateway(settings, cfg.workdir, announce=typer.echo, runs_dir=cfg.path(cfg.project.runs_dir), config=cfg))


def export(
    run: Annotated[str, typer.Argument(help="A run id (a loop run exports its best iteration), RUN:iter-K, a run folder or a model folder.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="safetensors, gguf or ollama.")] = "gguf",
    quantization: Annotated[
        Optional[str], typer.Option("--quantization", "-q", help="f16, q8_0 or q4_k_m (gguf and ollama).", show_default=False)
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export a trained run (merged safetensors, GGUF, or an Ollama Modelfile + GGUF), check parity, write a model card."""
    from llamaduo.deploy.export import export_run

    cfg = get_config(config, set_)
    result = export_run(cfg, run, fmt, quantization, announce=(lambda _m: None) if as_json else typer.echo)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    p = result.parity
    typer.echo(
        f"exported to {result.folder}: parity passed ({p.prompt_tokens_equal}/{p.prompts} prompts token-identical, "
        f"mean token F1 {p.mean_token_f1:.3f} >= {p.tolerance}, stop agreement {p.stop_agreement:.2f})"
    )
    typer.echo(f"parity code path: {p.code_path}")
