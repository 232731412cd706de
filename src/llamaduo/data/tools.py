"""Tool definitions and tool calls in the layouts applications log them, normalised to the OpenAI shape.

Covers OpenAI `tools` and the legacy `functions` / `function_call`, LLaMA-Factory's ShareGPT variant
(`function_call` / `observation` turns and a `tools` column, as in glaive-function-calling) and the Hermes
variant (`<tools>` in the system turn, `<tool_call>` in the answer, `<tool_response>` in `tool` turns).
"""

from __future__ import annotations

import json
import re
from typing import Any

from llamaduo.data.formats import RowError

_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)
_TOOLS_BLOCK = re.compile(r"<tools>\s*(.*?)\s*</tools>", re.S)
_TOOL_RESPONSE = re.compile(r"^\s*<tool_response>\s*(.*?)\s*</tool_response>\s*$", re.S)


class BadToolCall(Exception):
    """A call whose name or arguments cannot be read: the row is left out (training on it teaches a broken call)."""


def normalize_tools(value: Any) -> list[dict[str, Any]] | None:
    """OpenAI tool definitions from a list (or its JSON text) of wrapped or bare function definitions."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise RowError("`tools` is text but not JSON") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise RowError(f"`tools` should be a list of function definitions, got {type(value).__name__}")
    tools = []
    for item in value:
        spec = item.get("function") if isinstance(item, dict) and item.get("type", "function") == "function" and "function" in item else item
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
            raise RowError("each tool definition needs a function `name`")
        parameters = spec.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            raise RowError(f"tool {spec['name']!r}: `parameters` should be a JSON schema object")
        function = {"name": spec["name"], "description": spec.get("description") or "", "parameters": parameters}
        if spec.get("strict") is not None:
            function["strict"] = bool(spec["strict"])
        tools.append({"type": "function", "function": function})
    return tools


def tools_of(container: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The tools a request or row offers: `tools`, else the legacy `functions`."""
    return normalize_tools(container.get("tools")) or normalize_tools(container.get("functions"))


def tool_calls_of(message: dict[str, Any], turn: int) -> list[dict[str, Any]]:
    """An assistant turn's calls, from `tool_calls` or the legacy single `function_call`."""
    raw = message.get("tool_calls")
    if raw is None and isinstance(message.get("function_call"), dict):
        raw = [{"type": "function", "function": message["function_call"]}]
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise RowError("`tool_calls` is not a list")
    return [_call(item.get("function") if isinstance(item, dict) else None, item.get("id") if isinstance(item, dict) else None, turn, k) for k, item in enumerate(raw)]


def calls_from_json(value: Any, turn: int) -> list[dict[str, Any]]:
    """Calls written as JSON: `{"name", "arguments"}`, a list of them, or that JSON as text (ShareGPT `function_call`)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise BadToolCall("a function_call turn that is not JSON") from None
    items = value if isinstance(value, list) else [value]
    return [_call(item, item.get("id") if isinstance(item, dict) else None, turn, k) for k, item in enumerate(items)]


def split_markup(text: str, turn: int) -> tuple[str, list[dict[str, Any]]]:
    """The Hermes convention: `<tool_call>{json}</tool_call>` blocks in an answer become calls; the rest is content."""
    calls = [item for k, block in enumerate(_TOOL_CALL.findall(text)) for item in calls_from_json(block, turn * 100 + k)]
    return _TOOL_CALL.sub("", text).strip(), calls


def tools_from_system(text: str) -> list[dict[str, Any]] | None:
    """Definitions inside a Hermes system prompt's `<tools>...</tools>` (one JSON value after another)."""
    found = _TOOLS_BLOCK.search(text)
    if not found:
        return None
    decoder, body, items, at = json.JSONDecoder(), found.group(1), [], 0
    while at < len(body):
        if body[at].isspace() or body[at] == ",":
            at += 1
            continue
        try:
            value, at = decoder.raw_decode(body, at)
        except ValueError:
            raise RowError("the system turn's <tools> block is not JSON") from None
        items.extend(value if isinstance(value, list) else [value])
    return normalize_tools(items)


def unwrap_response(text: str) -> str:
    """A Hermes tool turn's `<tool_response>...</tool_response>` wrapper is template markup, not the result."""
    found = _TOOL_RESPONSE.match(text)
    return found.group(1) if found else text


def result_text(value: Any) -> str:
    """A tool result as text: JSON results (objects, lists, numbers) are written as JSON."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _call(function: Any, call_id: Any, turn: int, index: int) -> dict[str, Any]:
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise BadToolCall("a tool call without a function name")
    arguments = function.get("arguments", function.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            raise BadToolCall(f"the arguments of a call to {function['name']!r} are not JSON") from None
    if not isinstance(arguments, dict):
        raise BadToolCall(f"the arguments of a call to {function['name']!r} are not a JSON object")
    # Logs without ids (ShareGPT, legacy function_call) get ones that are stable per row, so ids stay content hashes.
    return {
        "id": call_id if isinstance(call_id, str) and call_id else f"call_{turn}_{index}",
        "type": "function",
        "function": {"name": function["name"], "arguments": json.dumps(arguments, ensure_ascii=False)},
    }
