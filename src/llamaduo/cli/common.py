"""Options shared by every command, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llamaduo.config import Config, load_config

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Config file (default: $LLAMADUO_CONFIG or ./llamaduo.yaml).", show_default=False),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value: section.key=value (repeatable).", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors and the final result.")]


def get_config(config: Path | None, overrides: list[str] | None, *, required: bool = False) -> Config:
    """Load the config named by --config (or the default) with the --set overrides applied."""
    return load_config(config, overrides or (), required=required)
