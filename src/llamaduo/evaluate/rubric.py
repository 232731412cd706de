"""Judge rubrics: versioned Jinja templates (built in, or the user's own) rendered into chat messages.

A template has two blocks. `rubric` becomes the system message and must not depend on the item, so it is
byte-identical for every request and provider prompt caches apply. `item` carries one judgment's texts,
each cleaned and fenced by `fence` so that hostile text cannot break out of its delimiters.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from llamaduo.errors import LlamaduoError

# Control characters other than tab and newline confuse tokenizers and terminals, and carry no meaning here.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")
# Runs of angle brackets could imitate our <<<DELIMITER>>> lines; spacing them out defuses that.
_ANGLES = re.compile(r"<{3,}|>{3,}")


def fence(text: str | None, max_chars: int) -> str:
    """Make untrusted text safe to place between delimiters: no control characters, no fake delimiters, bounded."""
    text = _CONTROL.sub("", text or "")
    text = _ANGLES.sub(lambda m: " ".join(m.group(0)), text)
    if len(text) > max_chars:
        cut = len(text) - max_chars
        text = f"{text[:max_chars]}\n[... {cut} more characters cut by llamaduo ...]"
    return text


@dataclass(frozen=True)
class Rubric:
    """A loaded template: `messages(**item)` gives [system rubric, user item]."""

    name: str
    source: str
    template: jinja2.Template
    system: str

    @property
    def id(self) -> str:
        """Name plus a hash of the template text, recorded with every score."""
        return f"{self.name}@{hashlib.sha256(self.source.encode()).hexdigest()[:12]}"

    def messages(self, **item: str) -> list[dict[str, str]]:
        context = self.template.new_context(dict(item))
        try:
            user = "".join(self.template.blocks["item"](context)).strip()
        except jinja2.TemplateError as exc:
            raise LlamaduoError(f"rubric {self.name}: the item block failed: {exc}", "Fix the template's `item` block") from None
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]


def load_rubric(mode: str, *, path: str | Path | None = None, version: str = "v1") -> Rubric:
    """The built-in `<mode>_<version>.j2`, or the template at `path`; errors are one line naming the fix."""
    if path is not None:
        p = Path(path)
        try:
            source = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise LlamaduoError(f"cannot read the rubric template {p}: {exc}", "Check evaluate.rubric") from None
        name = p.name
    else:
        name = f"{mode}_{version}.j2"
        try:
            source = resources.files("llamaduo.evaluate.templates").joinpath(name).read_text(encoding="utf-8")
        except (FileNotFoundError, OSError):
            raise LlamaduoError(f"there is no built-in rubric {name}", "Set evaluate.rubric_version to v1") from None
    return compile_rubric(name, source)


def compile_rubric(name: str, source: str) -> Rubric:
    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)
    try:
        template = env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise LlamaduoError(
            f"rubric template {name} has a syntax error at line {exc.lineno}: {exc.message}", "Fix the Jinja syntax"
        ) from None
    missing = [b for b in ("rubric", "item") if b not in template.blocks]
    if missing:
        raise LlamaduoError(
            f"rubric template {name} lacks the block(s) {', '.join(missing)}",
            "Define {% block rubric %}...{% endblock %} and {% block item %}...{% endblock %}",
        )
    try:
        system = "".join(template.blocks["rubric"](template.new_context({}))).strip()
    except jinja2.UndefinedError as exc:
        raise LlamaduoError(
            f"rubric template {name}: the rubric block uses an item variable ({exc.message})",
            "Keep the rubric block constant (it is cached by providers); put item text in the item block",
        ) from None
    except jinja2.TemplateError as exc:
        raise LlamaduoError(f"rubric template {name}: {exc}", "Fix the template") from None
    return Rubric(name=name, source=source, template=template, system=system)
