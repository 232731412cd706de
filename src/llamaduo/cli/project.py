"""`llamaduo init` and `llamaduo config show`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from llamaduo.cli.common import ConfigOpt, JsonOpt, SetOpt, get_config
from llamaduo.config import DEFAULT_CONFIG_NAME
from llamaduo.errors import LlamaduoError

config_app = typer.Typer(help="Inspect the resolved config.", no_args_is_help=True)


def init(
    path: Annotated[
        Path, typer.Argument(help="A project folder (created if missing; `.` is the current one) or a config file ending in .yaml/.yml.")
    ] = Path("."),
    name: Annotated[str | None, typer.Option(help="Project name (default: the folder's name).", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing config file.")] = False,
) -> None:
    """Create a commented llamaduo.yaml with every setting at its default."""
    from llamaduo.atomic import atomic_write_text
    from llamaduo.docs import config_template

    target = config_target(path)
    if target.exists() and not force:
        raise LlamaduoError(f"{target} already exists", "Pass --force to overwrite it, or edit it.")
    project = name or _project_name(target.parent)
    atomic_write_text(target, config_template(project_name=project))
    folder = target.parent.resolve()
    move = "" if folder == Path.cwd().resolve() else f"cd {target.parent}; "
    default = target.name == DEFAULT_CONFIG_NAME
    show = "llamaduo config show" if default else f"llamaduo config show --config {target.name}"
    typer.echo(f"wrote {target}; {move}edit the service models and data sources, then run `{show}`")


def config_target(path: Path) -> Path:
    """Where `init PATH` writes: PATH itself when it names a .yaml/.yml file, else PATH/llamaduo.yaml (like `git init DIR`)."""
    if path.is_dir():
        return path / DEFAULT_CONFIG_NAME
    if path.suffix.lower() in (".yaml", ".yml"):
        return path
    if path.exists():
        raise LlamaduoError(
            f"{path} is a file, not a folder",
            f"Pass a folder to create {DEFAULT_CONFIG_NAME} in, or a path ending in .yaml to write the config there.",
        )
    return path / DEFAULT_CONFIG_NAME


def _project_name(folder: Path) -> str:
    # The folder's name, as `cargo init` and `uv init` do; runs are folders named after it, so keep it path-safe.
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", folder.resolve().name).strip("-.")
    return cleaned or "llamaduo"


@config_app.command("show")
def show(config: ConfigOpt = None, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Print the resolved config (defaults, file, ${VAR}s and --set overrides) with secrets redacted."""
    cfg = get_config(config, set_)
    data = cfg.redacted()
    if as_json:
        import json

        typer.echo(json.dumps(data, indent=2))
        return
    import yaml
    from rich.console import Console
    from rich.syntax import Syntax

    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    Console().print(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))


@config_app.command("check")
def check(config: ConfigOpt = None, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Send one tiny structured request to every service role (cache skipped, billed) to catch bad keys and URLs early."""
    from llamaduo.service import run_sync
    from llamaduo.service.check import check_service

    cfg = get_config(config, set_)
    checks = run_sync(check_service(cfg))
    failed = [c for c in checks if not c.ok]
    from rich.console import Console

    if as_json:
        import json

        typer.echo(json.dumps([c.model_dump() for c in checks], indent=2))
    else:
        console = Console(highlight=False, soft_wrap=True)
        for c in checks:
            where = f"{c.provider}/{c.model}" + (f" at {c.base_url}" if c.base_url else "")
            if c.ok:
                console.print(f"[green]ok[/]    {c.role:10s} {where}: answered in {c.latency_s:.2f} s for ${c.cost_usd:.6f}")
            else:
                console.print(f"[red]fail[/]  {c.role:10s} {where}: {c.problem}. {c.fix or ''}".rstrip())
    if failed:
        names = ", ".join(c.role for c in failed)
        raise LlamaduoError(f"{len(failed)} of {len(checks)} service roles failed the check ({names})", "Fix what is named above and rerun `llamaduo config check`.")
