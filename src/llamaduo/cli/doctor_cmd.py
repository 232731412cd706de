"""`llamaduo doctor`."""

from __future__ import annotations

from typing import Annotated

import typer

from llamaduo.cli.common import ConfigOpt, JsonOpt, SetOpt
from llamaduo.errors import LlamaduoError

MARKS = {"ok": "[green]ok[/]  ", "warn": "[yellow]warn[/]", "fail": "[red]fail[/]"}


def doctor(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    check_service: Annotated[bool, typer.Option("--check-service", help="Also send each service role one tiny structured request (billed, a fraction of a cent), as `llamaduo config check` does.")] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="Probe llama.cpp again instead of using this machine's cached answer.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check what works on this machine, one line per capability, with the fix for what does not.

    Exits 0 when the main job can run; missing optional parts (GPU, llama.cpp, converter, Ollama) are warnings. Service roles get a key check and a keyless GET; a paid probe only with --check-service.
    """
    import json

    from rich.console import Console
    from rich.markup import escape

    from llamaduo.cli.common import get_config
    from llamaduo.config import _find_config
    from llamaduo.doctor import run_doctor

    cfg = get_config(config, set_) if (config is not None or _find_config(None) is not None) else None
    checks = run_doctor(cfg, check_service=check_service, fresh=fresh)
    if as_json:
        typer.echo(json.dumps({"ok": all(c.status != "fail" for c in checks), "checks": [c.model_dump() for c in checks]}, indent=2))
    else:
        console = Console(highlight=False, soft_wrap=True)
        for c in checks:
            fix = f" [dim]fix:[/] {escape(c.fix)}" if c.fix else ""
            console.print(f"{MARKS[c.status]}  {c.name:18s} {escape(c.detail)}{fix}")
    failed = [c.name for c in checks if c.status == "fail"]
    if failed:
        raise LlamaduoError(f"the main job cannot run here: {', '.join(failed)} failed", "Apply the fixes named above and rerun `llamaduo doctor`.")
