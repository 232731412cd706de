"""`llamaduo init` and `llamaduo config show`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.syntax import Syntax

from llamaduo.cli.common import ConfigOpt, JsonOpt, SetOpt, get_config
from llamaduo.config import DEFAULT_CONFIG_NAME
from llamaduo.docs import config_template
from llamaduo.errors import LlamaduoError

config_app = typer.Typer(help="Inspect the resolved config.", no_args_is_help=True)


def init(
    path: Annotated[Path, typer.Argument(help="Where to write the config.")] = Path(DEFAULT_CONFIG_NAME),
    name: Annotated[str, typer.Option(help="Project name.")] = "llamaduo",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Create a commented llamaduo.yaml with every setting at its default."""
    from llamaduo.atomic import atomic_write_text

    if path.exists() and not force:
        raise LlamaduoError(f"{path} already exists", "Pass --force to overwrite it, or edit it.")
    atomic_write_text(path, config_template(project_name=name))
    typer.echo(f"wrote {path}; edit the service models and data sources, then run `llamaduo config show`")


@config_app.command("show")
def show(config: ConfigOpt = None, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Print the resolved config (defaults, file, ${VAR}s and --set overrides) with secrets redacted."""
    cfg = get_config(config, set_)
    data = cfg.redacted()
    if as_json:
        import json

        typer.echo(json.dumps(data, indent=2))
        return
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
