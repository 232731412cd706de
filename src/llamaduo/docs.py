"""Generated documentation: the config reference, the commented `llamaduo init` template and the CLI reference.

`python -m llamaduo.docs` rewrites docs/config.md and docs/cli.md; a test fails when they drift.
"""

from __future__ import annotations

import json
import sys
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from llamaduo.config import Config, _unwrap


def _is_section(tp: Any) -> bool:
    """A nested section or a list of sections; a dict of models (prices) is a plain value."""
    if typing.get_origin(tp) is dict:
        return False
    tp = _unwrap(tp)
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _type_name(tp: Any) -> str:
    text = repr(tp) if typing.get_origin(tp) else getattr(tp, "__name__", repr(tp))
    return text.replace("typing.", "").replace("llamaduo.", "").replace("NoneType", "None")


def _default(field: FieldInfo) -> Any:
    value = field.get_default(call_default_factory=True)
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def config_reference() -> str:
    lines = [
        "# Config reference",
        "",
        "Generated from the pydantic models by `python -m llamaduo.docs`; do not edit by hand.",
        "Every key below may be set in `llamaduo.yaml` or with `--set section.key=value`.",
        "Unknown keys are errors. Strings may use `${VAR}` or `${VAR:-default}`.",
        "",
    ]

    def walk(model: type[BaseModel], prefix: str, depth: int) -> None:
        lines.append(f"{'#' * min(depth + 2, 6)} `{prefix or 'top level'}`")
        lines.append("")
        if model.__doc__:
            lines.extend([model.__doc__.strip().splitlines()[0], ""])
        lines.extend(["| key | type | default | meaning |", "|---|---|---|---|"])
        nested = []
        for name, field in model.model_fields.items():
            key = f"{prefix}.{name}" if prefix else name
            if _is_section(field.annotation):
                nested.append((_unwrap(field.annotation), key))
            if _is_section(field.annotation):
                default = ""
            elif field.is_required():
                default = "required"
            else:
                default = json.dumps(_default(field))
            doc = (field.description or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{key}` | `{_type_name(field.annotation)}` | `{default}` | {doc} |")
        lines.append("")
        for sub, key in nested:
            walk(sub, key, depth + 1)

    walk(Config, "", 0)
    return "\n".join(lines).rstrip() + "\n"


def config_template(project_name: str = "llamaduo") -> str:
    """The YAML `llamaduo init` writes: every key at its default, each with its help as a comment."""
    out = [
        "# llamaduo project config. Reference: docs/config.md",
        "# API keys are read from the environment variables named by api_key_env, never from this file.",
    ]

    def emit(model: type[BaseModel], values: dict[str, Any], indent: str, first_prefix: str = "") -> None:
        for i, (name, field) in enumerate(model.model_fields.items()):
            lead = first_prefix if i == 0 and first_prefix else indent
            if field.description and not first_prefix:
                out.extend(f"{indent}# {line}" for line in field.description.splitlines())
            value = values.get(name)
            sub = _unwrap(field.annotation)
            if _is_section(field.annotation) and isinstance(value, dict):
                out.append(f"{lead}{name}:")
                emit(sub, value, indent + "  ")
            elif _is_section(field.annotation) and isinstance(value, list) and value:
                out.append(f"{lead}{name}:")
                for item in value:
                    emit(sub, item, indent + "    ", first_prefix=indent + "  - ")
            else:
                dumped = yaml.safe_dump(value, default_flow_style=True, width=10_000).split("\n...")[0].strip()
                out.append(f"{lead}{name}: {dumped}")
            first_prefix = ""

    values = Config().model_dump(mode="json")
    values["project"]["name"] = project_name
    emit(Config, values, "")
    return "\n".join(out) + "\n"


def cli_reference() -> str:
    """Every command's --help as the user sees it, at a fixed width with no colour."""
    import typer.main
    from typer.testing import CliRunner

    from llamaduo.cli.app import app
    from llamaduo.cli.lazy import subcommands

    runner = CliRunner()
    env = {"TERMINAL_WIDTH": "100", "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    lines = ["# CLI reference", "", "Generated from `--help` by `python -m llamaduo.docs`; do not edit by hand.", ""]

    def visit(cmd: Any, path: list[str]) -> None:
        result = runner.invoke(app, [*path[1:], "--help"], env=env, prog_name="llamaduo")
        text = "\n".join(line.rstrip() for line in result.output.strip("\n").splitlines())
        lines.extend([f"## `{' '.join(path)}`", "", "```text", text, "```", ""])
        for name, sub in sorted(subcommands(cmd).items()):
            if not getattr(sub, "hidden", False):
                visit(sub, path + [name])

    visit(typer.main.get_command(app), ["llamaduo"])
    return "\n".join(lines).rstrip() + "\n"


def write_docs(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("config.md", config_reference()), ("cli.md", cli_reference())):
        (folder / name).write_text(text, encoding="utf-8")
        written.append(folder / name)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs")
    for path in write_docs(target):
        print(f"wrote {path}")
