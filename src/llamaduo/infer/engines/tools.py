"""Tool calling in prompts and answers: the one renderer and parser used by serving and by training.

A chat template that renders `tools` and assistant `tool_calls` itself (Qwen 2.5, Llama 3.1, Hermes...) is used as it
is: the call format (e.g. `<tool_call>\\n{"name": ..., "arguments": ...}`) is read off the template by rendering a
probe call. Any other template gets the fallback: the function definitions as JSON in the system turn and each call
as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` in the assistant turn (the Hermes/Qwen convention),
tool results as a user turn of `<tool_response>...</tool_response>`. Training text and serving prompts both come
from `prepare_chat`, so a fine-tuned model is asked in the format it learned.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from dataclasses import asdict, dataclass
from typing import Any

FALLBACK_OPEN = "<tool_call>"
FALLBACK_CLOSE = "</tool_call>"
RESPONSE_OPEN, RESPONSE_CLOSE = "<tool_response>", "</tool_response>"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DECODER = json.JSONDecoder()


class ToolSpecError(ValueError):
    """A tool definition, tool_choice or tool call that cannot be used; the message names the field and the fix."""

    def __init__(self, message: str, param: str = "tools"):
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class ToolFormat:
    """How a model writes a call: `open` + {name_key: ..., args_key: {...}} + `close`, as its template renders one."""

    open: str = FALLBACK_OPEN
    close: str = FALLBACK_CLOSE
    name_key: str = "name"
    args_key: str = "arguments"
    native: bool = False
    """True when the model's own template renders tools and calls; False for the fallback format."""
    system_role: bool = True
    """Whether the template accepts a system turn (Gemma's does not: the fallback then opens the first user turn)."""

    def call_text(self, name: str, arguments: Any) -> str:
        """One call as the assistant writes it (arguments as an object, or as text that is not JSON)."""
        return self.open + json.dumps({self.name_key: name, self.args_key: _as_object(arguments)}, ensure_ascii=False) + self.close

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolFormat:
        return cls(**data)


FALLBACK = ToolFormat()


# ---- definitions and tool_choice --------------------------------------------------------------------


def check_tools(tools: Any) -> list[dict[str, Any]]:
    """OpenAI tool definitions, validated, each with a `parameters` schema (an empty object schema when absent)."""
    if not isinstance(tools, list) or not tools:
        raise ToolSpecError("tools must be a non-empty list of {type: function, function: {name, parameters}} objects")
    out, seen = [], set()
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(tool.get("function"), dict):
            raise ToolSpecError(f"{where} must be {{\"type\": \"function\", \"function\": {{...}}}}; only function tools are supported")
        fn = dict(tool["function"])
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ToolSpecError(f"{where}.function.name must be 1-64 letters, digits, _ or -; got {name!r}")
        if name in seen:
            raise ToolSpecError(f"{where}.function.name {name!r} is defined twice; give each function its own name")
        seen.add(name)
        params = fn.get("parameters")
        if params is None:
            params = {"type": "object", "properties": {}}
        if not isinstance(params, dict):
            raise ToolSpecError(f"{where}.function.parameters must be a JSON schema object")
        fn["parameters"] = params
        out.append({"type": "function", "function": fn})
    return out


def resolve_choice(tool_choice: Any, tools: list[dict[str, Any]] | None) -> tuple[str, str | None]:
    """(`none` | `auto` | `required`, the forced function's name or None), as OpenAI reads tool_choice."""
    if tool_choice is None:
        return ("auto" if tools else "none"), None
    if not tools:
        if tool_choice == "none":
            return "none", None
        raise ToolSpecError("tool_choice needs tools: send the function definitions in `tools`", "tool_choice")
    if tool_choice in ("none", "auto", "required"):
        return tool_choice, None
    fn = tool_choice.get("function") if isinstance(tool_choice, dict) and tool_choice.get("type") == "function" else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str):
        raise ToolSpecError('tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}', "tool_choice")
    if name not in {t["function"]["name"] for t in tools}:
        raise ToolSpecError(f"tool_choice names function {name!r}, which is not in tools; add it or name one of them", "tool_choice")
    return "required", name


def tools_block(tools: list[dict[str, Any]], fmt: ToolFormat = FALLBACK) -> str:
    """The fallback's system text: the definitions as JSON lines and how to call one."""
    lines = "\n".join(json.dumps(t["function"] if "function" in t else t, ensure_ascii=False) for t in tools)
    example = fmt.open + '{"' + fmt.name_key + '": <function name>, "' + fmt.args_key + '": <arguments as a JSON object>}' + fmt.close
    return f"You can call these functions:\n<tools>\n{lines}\n</tools>\nTo call one, answer with {example}, once per call."


# ---- rendering --------------------------------------------------------------------------------------


def prepare_chat(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, template: str | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The messages and extra template variables (`tools`) to render a chat with `template`.

    Chats without tools or tool turns come back unchanged, so plain prompts render exactly as before. Messages are in
    the OpenAI shape (tool_calls with arguments as JSON text); native templates get arguments as dicts, as
    transformers documents, and the fallback turns calls and results into text.
    """
    has_turns = any(m.get("tool_calls") or m.get("role") == "tool" for m in messages)
    if not tools and not has_turns:
        return messages, {}
    fmt = tool_format(template)
    if fmt.native:
        return [_native_message(m) for m in messages], ({"tools": tools} if tools else {})
    return fallback_messages(messages, tools, fmt), {}


def fallback_messages(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, fmt: ToolFormat = FALLBACK) -> list[dict[str, Any]]:
    """Plain role/content turns in the fallback format (see the module docstring)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        role, content = m.get("role"), m.get("content") or ""
        if role == "tool":
            result = f"{RESPONSE_OPEN}{content}{RESPONSE_CLOSE}"
            if out and out[-1].get("_results"):  # consecutive results share one user turn
                out[-1]["content"] += "\n" + result
            else:
                out.append({"role": "user", "content": result, "_results": True})
            continue
        if role == "assistant" and m.get("tool_calls"):
            calls = [FALLBACK.call_text(c["function"]["name"], c["function"].get("arguments")) for c in m["tool_calls"]]
            content = "\n".join([content, *calls] if content else calls)
        out.append({"role": role, "content": content})
    for m in out:
        m.pop("_results", None)
    if tools:
        block = tools_block(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{block}" if out[0]["content"] else block}
        elif fmt.system_role:
            out.insert(0, {"role": "system", "content": block})
        else:
            first = next((i for i, m in enumerate(out) if m["role"] == "user"), None)
            if first is None:
                out.insert(0, {"role": "user", "content": block})
            else:
                out[first] = {"role": "user", "content": f"{block}\n\n{out[first]['content']}"}
    return out


def render_tools_prompt(template: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, *,
                        add_generation_prompt: bool = True, **special: Any) -> str:
    """The prompt text for a chat with tools, rendered with `template` (sandboxed, as transformers renders it)."""
    from llamaduo.infer.engines.base import render_template

    msgs, extra = prepare_chat(messages, tools, template)
    return render_template(template, msgs, add_generation_prompt, **extra, **special)


def _native_message(m: dict[str, Any]) -> dict[str, Any]:
    m = dict(m)
    if m.get("tool_calls"):
        m["content"] = m.get("content") or ""
        m["tool_calls"] = [
            {**c, "type": "function", "function": {**c["function"], "arguments": _as_object(c["function"].get("arguments"))}}
            for c in m["tool_calls"]
        ]
    return m


def _as_object(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    return {} if arguments is None else arguments


# ---- the template probe -----------------------------------------------------------------------------

_PROBE_FN = "llamaduo_probe_fn"
_PROBE_ARGS = {"probe_arg": "probe_value"}
_PROBE_TOOLS = [{"type": "function", "function": {
    "name": _PROBE_FN, "description": "probe", "parameters": {"type": "object", "properties": {"probe_arg": {"type": "string"}}},
}}]
_PROBE_USER = {"role": "user", "content": "llamaduo probe question"}


def _probe_call(k: int) -> dict[str, Any]:
    # Nine alphanumerics: Mistral's template refuses any other id length.
    return {"id": f"probe000{k}", "type": "function", "function": {"name": _PROBE_FN, "arguments": dict(_PROBE_ARGS)}}


@functools.lru_cache(maxsize=32)
def tool_format(template: str | None) -> ToolFormat:
    """The call format `template` renders, found by rendering a probe call; FALLBACK when it renders no tools or calls."""
    if not template:
        return FALLBACK
    from llamaduo.infer.engines.base import render_template
    from llamaduo.train.template import strip_generation_markers

    template = strip_generation_markers(template)

    def render(messages: list[dict[str, Any]], generation: bool, **extra: Any) -> str | None:
        try:
            return render_template(template, messages, generation, **extra)
        except Exception:  # a template that cannot render this shape does not support it
            return None

    system_ok = render([{"role": "system", "content": "s"}, _PROBE_USER], True) is not None
    fallback = ToolFormat(system_role=system_ok)
    prompt = render([_PROBE_USER], True, tools=_PROBE_TOOLS)
    if prompt is None or _PROBE_FN not in prompt:
        return fallback
    found = None
    for calls in ([_probe_call(1), _probe_call(2)], [_probe_call(1)]):
        full = render([_PROBE_USER, {"role": "assistant", "content": "", "tool_calls": calls}], False, tools=_PROBE_TOOLS)
        if full is not None and full.startswith(prompt):
            found = _read_format(full[len(prompt):], two=len(calls) == 2)
            if found is not None:
                break
    if found is None:
        return fallback
    open_, close, name_key, args_key = found
    return ToolFormat(open=open_, close=close, name_key=name_key, args_key=args_key, native=True, system_role=system_ok)


def _read_format(turn: str, *, two: bool) -> tuple[str, str, str, str] | None:
    objects = list(_call_objects(turn))
    if not objects or (two and len(objects) < 2):
        return None
    start, end, obj = objects[0]
    name_key = next(k for k, v in obj.items() if v == _PROBE_FN)
    args_key = next((k for k, v in obj.items() if v == _PROBE_ARGS or v == json.dumps(_PROBE_ARGS)), None)
    if args_key is None:
        return None
    close = ""
    opener = turn[:start].strip()
    if two and opener:  # between two calls: close, a separator, then the opener again
        between = turn[end:objects[1][0]]
        cut = between.rfind(opener)
        if cut > 0:
            close = between[:cut].rstrip()
    return turn[:start], close, name_key, args_key


def _call_objects(text: str):
    """(start, end, object) of each JSON object in `text` that names the probe function."""
    pos = 0
    while True:
        start = text.find("{", pos)
        if start < 0:
            return
        try:
            obj, end = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError:
            pos = start + 1
            continue
        if isinstance(obj, dict) and _PROBE_FN in obj.values():
            yield start, end, obj
            pos = end
        else:
            pos = start + 1


# ---- parsing answers --------------------------------------------------------------------------------


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def tool_call(name: str, arguments: Any, call_id: str | None = None) -> dict[str, Any]:
    """One call in the OpenAI shape (arguments as JSON text)."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {"id": call_id or new_call_id(), "type": "function", "function": {"name": name, "arguments": text}}


def parse_tool_calls(text: str, fmt: ToolFormat = FALLBACK, names: list[str] | set[str] | None = None) -> tuple[str | None, list[dict[str, Any]]]:
    """(content, tool_calls) of an assistant answer written in `fmt`.

    A call is `fmt.open` followed by a JSON object with the function's name and arguments; a call that does not parse
    (a truncated answer) or names a function outside `names` stays in the content. With no opener in the text, an
    answer that is nothing but such objects (markers dropped as special tokens) also counts when `names` is given.
    Content is None when the answer is only calls, as in the OpenAI shape.
    """
    known = set(names) if names is not None else None
    opener = fmt.open.strip()
    closer = fmt.close.strip()
    calls: list[dict[str, Any]] = []
    parts: list[str] = []
    pos = 0
    while opener:
        at = text.find(opener, pos)
        if at < 0:
            break
        start = _skip_space(text, at + len(opener))
        try:
            obj, end = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError:
            break
        call = _to_call(obj, fmt, known)
        if call is None:
            break
        parts.append(text[pos:at])
        calls.append(call)
        pos = _skip_space(text, end)
        if closer and text.startswith(closer, pos):
            pos += len(closer)
    if not calls and (known is not None or not opener):
        bare = _bare_calls(text, fmt, known)
        if bare:
            return None, bare
    if not calls:
        return text, []
    parts.append(text[pos:])
    content = "".join(parts).strip()
    return content or None, calls


def _bare_calls(text: str, fmt: ToolFormat, known: set[str] | None) -> list[dict[str, Any]]:
    stripped = text.strip()
    if not stripped.startswith(("{", "[")):
        return []
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError:
        return []
    items = value if isinstance(value, list) else [value]
    calls = [_to_call(item, fmt, known) for item in items]
    return calls if calls and all(c is not None for c in calls) else []  # type: ignore[return-value]


def _to_call(obj: Any, fmt: ToolFormat, known: set[str] | None) -> dict[str, Any] | None:
    if not isinstance(obj, dict):
        return None
    name = obj.get(fmt.name_key, obj.get("name"))
    if not isinstance(name, str) or (known is not None and name not in known):
        return None
    for key in (fmt.args_key, "arguments", "parameters"):
        if key in obj:
            args = _as_object(obj[key])
            break
    else:
        args = {}
    return tool_call(name, args)


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


# ---- constrained decoding ---------------------------------------------------------------------------

_ENUM_RANGE = 64


def decoding_schema(schema: dict[str, Any] | None) -> dict[str, Any]:
    """The arguments schema as handed to constrained decoding.

    Neither lm-format-enforcer nor llama.cpp's grammar converter enforces minimum/maximum, so an integer range of up
    to 64 values becomes the equivalent enum, which both enforce; an empty schema becomes "any object".
    """
    if not schema:
        return {"type": "object"}
    return _tighten(schema)


def _tighten(node: Any) -> Any:
    if isinstance(node, list):
        return [_tighten(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: (v if k in ("enum", "const", "default", "examples") else _tighten(v)) for k, v in node.items()}
    lo, hi = out.get("minimum"), out.get("maximum")
    if out.get("type") == "integer" and "enum" not in out and isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
        first, last = int(-(-lo // 1)), int(hi // 1)  # ceil(minimum), floor(maximum)
        if 0 <= last - first < _ENUM_RANGE:
            out["enum"] = list(range(first, last + 1))
    return out
