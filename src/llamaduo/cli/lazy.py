"""A command group whose verbs import their modules only when used, so `llamaduo --help` and `status` start at once.

Importing every verb's module up front cost over a second (pydantic models of every stage, rich, httpx, ...)
before any command ran. Each verb is named here by module and attribute; its summary for `llamaduo --help`
is kept beside it, and a test checks it against the verb's own docstring.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any, NamedTuple

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

# Depending on its version, typer builds on `click` or on a copy vendored as `typer._click`; nothing here names click's classes,
# so either works: commands are built by typer and contexts by the command's own `context_class`.
Command = Any


class LazyCommand(NamedTuple):
    module: str
    """Module of llamaduo.cli holding the verb."""
    attribute: str
    """A function (one verb) or a `typer.Typer` (a group of verbs, e.g. `data`)."""
    summary: str
    """The line `llamaduo --help` shows: the first paragraph of the verb's help."""


class LazyGroup(TyperGroup):
    """A TyperGroup that also holds verbs registered by name (`lazy_commands`), loaded on first use."""

    lazy_commands: dict[str, LazyCommand] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._summaries_only = False

    def list_commands(self, ctx: Any) -> list[str]:
        eager = super().list_commands(ctx)
        return [*self.lazy_commands, *(name for name in eager if name not in self.lazy_commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Command | None:
        spec = self.lazy_commands.get(cmd_name)
        if spec is None or cmd_name in self.commands:
            return super().get_command(ctx, cmd_name)
        if self._summaries_only:
            # The root --help lists summaries only; loading every verb to read its docstring is the cost we avoid.
            return TyperCommand(cmd_name, help=spec.summary, short_help=spec.summary)
        command = load_command(cmd_name, spec)
        self.commands[cmd_name] = command
        return command

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except Exception as exc:  # click's UsageError; typer may vendor click, so the class is not named here
            # typer suggests close names from `self.commands`, which holds only the verbs loaded so far.
            message = getattr(exc, "message", None)
            if args and isinstance(message, str) and message.startswith("No such command") and "Did you mean" not in message:
                matches = difflib.get_close_matches(args[0], self.list_commands(ctx))
                if matches:
                    exc.message = f"{message.rstrip('.')}. Did you mean {', '.join(repr(m) for m in matches)}?"
            raise

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._summaries_only = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._summaries_only = False


def load_command(name: str, spec: LazyCommand) -> Command:
    """Import the verb's module and build its click command as `app.command(name)` / `app.add_typer` would."""
    target = getattr(importlib.import_module(f"llamaduo.cli.{spec.module}"), spec.attribute)
    if isinstance(target, typer.Typer):
        command = typer.main.get_group(target)
    else:
        single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        single.command(name)(target)
        command = typer.main.get_command(single)
    command.name = name
    return command


def subcommands(command: Command) -> dict[str, Command]:
    """A group's verbs by name, lazy ones loaded (for walks over the whole CLI: docs, tests); {} for a plain command."""
    if not hasattr(command, "list_commands"):
        return {}
    ctx = command.context_class(command)
    found = {name: command.get_command(ctx, name) for name in command.list_commands(ctx)}
    return {name: sub for name, sub in found.items() if sub is not None}
