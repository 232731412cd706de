"""Jinja templates of the generator prompts: built-in, versioned package files, overridable per task from the config."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from llamaduo.errors import ConfigError
from llamaduo.synth.tasks import KINDS

BUILTIN_DIR = Path(__file__).parent / "templates"
_VERSION = re.compile(r"template_version:\s*([\w.-]+)")


@dataclass(frozen=True)
class PromptTemplate:
    kind: str
    """Which reply schema the template asks for (summarization, classification, closed_qa, coding, general)."""
    version: str
    """`<name>/v<declared version>@<content sha>`: recorded in every pair's provenance."""
    template: jinja2.Template

    def render(self, **values: Any) -> str:
        return self.template.render(**values).strip() + "\n"


def _environment(extra_dir: Path | None = None) -> jinja2.Environment:
    dirs = [str(extra_dir)] if extra_dir else []
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([*dirs, str(BUILTIN_DIR)]),
        undefined=jinja2.StrictUndefined,  # a typo in an override fails loudly instead of rendering blanks
        keep_trailing_newline=True,
        autoescape=False,  # plain-text prompts, not HTML
    )


def kind_for(config: Any, task: str) -> str:
    if task in KINDS:
        return task
    kind = config.synth.task_templates.get(task, "general")
    if kind not in KINDS:
        raise ConfigError(f"synth.task_templates.{task} is {kind!r}", f"Use one of {', '.join(KINDS)}.")
    return kind


def load_template(config: Any, task: str, name: str | None = None) -> PromptTemplate:
    """The template for `task` (or the named built-in, e.g. `quality`), honouring `synth.templates` overrides."""
    kind = kind_for(config, task) if name is None else name
    override = config.synth.templates.get(task if name is None else name)
    if override:
        path = config.path(override)
        if not path.is_file():
            raise ConfigError(f"synth.templates.{task}: template file {path} not found", "Fix the path (relative to the project folder).")
        source = path.read_text(encoding="utf-8")
        env, label = _environment(path.parent), f"{path.stem}"
    else:
        path = BUILTIN_DIR / f"{kind}.j2"
        source = path.read_text(encoding="utf-8")
        env, label = _environment(), kind
    try:
        template = env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"template {path} line {exc.lineno}: {exc.message}", "Fix the Jinja syntax.") from None
    declared = _VERSION.search(source)
    # The shared seed partial is part of every prompt, so it is part of the version too.
    partial = (BUILTIN_DIR / "_seeds.j2").read_text(encoding="utf-8")
    digest = hashlib.sha256((source + partial).encode("utf-8")).hexdigest()[:8]
    return PromptTemplate(kind, f"{label}/v{declared.group(1) if declared else '0'}@{digest}", template)
