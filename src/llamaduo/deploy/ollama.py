"""Ollama Modelfiles that reproduce the checkpoint's chat template exactly.

The Jinja template is probed with sentinel messages and reduced to per-role prefix/suffix strings (plus a default
system prompt, if the template injects one). The reduction is verified against the Jinja rendering on several
conversations before any Go template is written; a template that does not reduce is refused with the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llamaduo.infer.engines.base import EngineError, render_template
from llamaduo.errors import LlamaduoError

_S, _U1, _A1, _U2, _A2 = "SYSq7x", "USRq7x1", "ASTq7x1", "USRq7x2", "ASTq7x2"
ROLES = ("system", "user", "assistant")


@dataclass
class RoleTemplate:
    """A chat template as Ollama can express it: leading + per message (prefix + content + suffix) + generation prefix."""

    leading: str
    prefix: dict[str, str]
    suffix: str
    generation: str
    default_system: str | None = None

    def render(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        if self.default_system is not None and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.default_system}, *messages]
        body = "".join(self.prefix[m["role"]] + m["content"] + self.suffix for m in messages)
        return self.leading + body + (self.generation if add_generation_prompt else "")

    def go_template(self, *, drop_leading: str = "") -> str:
        """The Ollama (Go text/template) TEMPLATE; literal text is emitted as Go string literals so nothing is trimmed."""

        def lit(text: str) -> str:
            return "{{ " + json.dumps(text, ensure_ascii=False) + " }}" if text else ""

        leading = self.leading[len(drop_leading):] if drop_leading and self.leading.startswith(drop_leading) else self.leading
        branches = []
        for i, role in enumerate(ROLES):
            keyword = "if" if i == 0 else "else if"
            branches.append(f'{{{{ {keyword} eq .Role "{role}" }}}}{lit(self.prefix[role])}{{{{ .Content }}}}{lit(self.suffix)}')
        return lit(leading) + "{{ range .Messages }}" + "".join(branches) + "{{ end }}{{ end }}" + lit(self.generation)


def _render(template: str, messages: list[dict[str, str]], gen: bool, special: dict[str, Any]) -> str:
    return render_template(template, messages, add_generation_prompt=gen, **special)


def reduce_template(template: str, special: dict[str, Any]) -> RoleTemplate:
    """Probe the Jinja template and return its role-wrapper form, verified on several conversations."""
    msg = lambda role, content: {"role": role, "content": content}  # noqa: E731
    try:
        full = _render(template, [msg("system", _S), msg("user", _U1), msg("assistant", _A1), msg("user", _U2)], False, special)
        only_user = _render(template, [msg("user", _U1)], False, special)
        with_gen = _render(template, [msg("user", _U1)], True, special)
    except EngineError as exc:
        raise LlamaduoError(f"the chat template cannot be probed: {exc}", "Export to safetensors or gguf instead.") from None
    spec = _reduce(full, only_user, with_gen)
    if spec is None:
        raise LlamaduoError(
            "the chat template is not a plain per-role template, so an Ollama TEMPLATE cannot reproduce it (template differs)",
            "Export --format gguf and serve it with `llamaduo serve`, which uses the model's own template.",
        )
    probes = [
        [msg("user", "hi")],
        [msg("system", "be brief"), msg("user", "a"), msg("assistant", "b"), msg("user", "c")],
        [msg("user", "x"), msg("assistant", "y"), msg("user", "z")],
    ]
    for probe in probes:
        for gen in (True, False):
            if spec.render(probe, add_generation_prompt=gen) != _render(template, probe, gen, special):
                raise LlamaduoError(
                    "the chat template renders differently from its Ollama translation (template differs)",
                    "Export --format gguf and serve it with `llamaduo serve`, which uses the model's own template.",
                )
    return spec


def _reduce(full: str, only_user: str, with_gen: str) -> RoleTemplate | None:
    marks = [full.find(s) for s in (_S, _U1, _A1, _U2)]
    if -1 in marks or marks != sorted(marks) or not with_gen.startswith(only_user):
        return None
    pre = full[: marks[0]]
    m1 = full[marks[0] + len(_S): marks[1]]
    m2 = full[marks[1] + len(_U1): marks[2]]
    m3 = full[marks[2] + len(_A1): marks[3]]
    suffix = full[marks[3] + len(_U2):]
    if not (m1.startswith(suffix) and m2.startswith(suffix) and m3.startswith(suffix)):
        return None
    p_user, p_asst = m1[len(suffix):], m2[len(suffix):]
    if m3[len(suffix):] != p_user:
        return None
    generation = with_gen[len(only_user):]
    head = only_user[: only_user.find(_U1)] if _U1 in only_user else None
    if head is None or not head.endswith(p_user):
        return None
    head = head[: len(head) - len(p_user)]
    if pre.startswith(head) and not (head.startswith(pre) and head != pre):
        # No system block when the conversation has none: `head` is the leading text.
        return RoleTemplate(head, {"system": pre[len(head):], "user": p_user, "assistant": p_asst}, suffix, generation)
    if head.startswith(pre) and head.endswith(suffix):
        # The template injects a default system prompt; the leading text always travels with the system prefix.
        default = head[len(pre): len(head) - len(suffix)]
        return RoleTemplate("", {"system": pre, "user": p_user, "assistant": p_asst}, suffix, generation, default)
    return None


def modelfile(gguf_name: str, spec: RoleTemplate, stops: list[str], params: dict[str, Any], *, bos_text: str = "") -> str:
    """The Modelfile text: FROM, TEMPLATE, SYSTEM (the template's default), stop tokens and default parameters."""
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{spec.go_template(drop_leading=bos_text)}"""']
    if spec.default_system is not None:
        if '"""' in spec.default_system:
            raise LlamaduoError("the default system prompt contains triple quotes, which a Modelfile cannot hold", "Export --format gguf instead.")
        lines.append(f'SYSTEM """{spec.default_system}"""')
    lines += [f"PARAMETER stop {json.dumps(s, ensure_ascii=False)}" for s in stops]
    lines += [f"PARAMETER {k} {v}" for k, v in params.items()]
    return "\n".join(lines) + "\n"
