"""Record layouts (chat, OpenAI logs, ShareGPT, Alpaca, Dolly, prompt/response pairs) turned into chat messages.

`to_chat` returns the chat turns of one row and the tools it offered, or raises `RowError` (malformed row)
or `Dropped` (well-formed but not usable: empty, non-text, no answer). Satisfaction metadata is read separately.
Tool calls and tool results are kept in the OpenAI shape (see `llamaduo.data.tools`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from llamaduo.data.formats import RowError
from llamaduo.data.tools import BadToolCall, calls_from_json, result_text, split_markup, tool_calls_of, tools_from_system, tools_of, unwrap_response
from llamaduo.errors import LlamaduoError

LAYOUTS = ("chat", "openai_log", "sharegpt", "alpaca", "dolly", "pair")
PAIR_KEYS = (("prompt", "response"), ("prompt", "completion"), ("question", "answer"), ("input", "output"), ("query", "response"))
_SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bing": "assistant", "system": "system",
    # Function-calling variants: LLaMA-Factory / glaive (function_call, observation), Hermes (tool).
    "function_call": "assistant", "tool_call": "assistant", "observation": "tool", "tool": "tool", "function_response": "tool", "tool_response": "tool",
}
_CALL_TURNS = ("function_call", "tool_call")
RATING_KEYS = ("rating", "score", "satisfaction")
FLAG_KEYS = ("satisfied", "satisfactory", "thumbs_up", "accepted", "approved")
TAG_KEYS = ("tags", "category", "categories", "labels")
TIME_KEYS = ("timestamp", "created_at", "created", "time", "date")


class Dropped(Exception):
    """A well-formed row that is left out; the message is the reason counted in the ingest report."""


def detect_layout(row: dict[str, Any]) -> str | None:
    """The layout whose fields this row has, or None."""
    keys = set(row)
    if "request" in keys and "response" in keys:
        return "openai_log"
    if "messages" in keys and ("response" in keys or "choices" in keys):
        return "openai_log"
    if "messages" in keys:
        return "chat"
    if "conversations" in keys or "conversation" in keys:
        return "sharegpt"
    if {"instruction", "context", "response"} <= keys:
        return "dolly"
    if "instruction" in keys and ("output" in keys or "response" in keys):
        return "alpaca"
    if any(set(pair) <= keys for pair in PAIR_KEYS):
        return "pair"
    return None


def require_layout(layout: str | None, row: dict[str, Any], where: str, forced: bool) -> str:
    """Check the first row against the forced or detected layout; a mismatch is a whole-file error."""
    detected = detect_layout(row)
    fields = ", ".join(sorted(map(str, row))) or "none"
    if layout is None:
        if detected is None:
            raise LlamaduoError(
                f"{where}: cannot tell the record layout from the fields ({fields})",
                "Expected e.g. messages; request+response; conversations; instruction/context/response; instruction/input/output; prompt/response. Rename the columns or pass --format.",
            )
        return detected
    if layout not in LAYOUTS:
        raise LlamaduoError(f"unknown layout {layout!r}", f"Use one of {', '.join(LAYOUTS)}.")
    if forced and not _fits(layout, row):
        raise LlamaduoError(f"{where}: the fields ({fields}) do not match the {layout} format", "Check --format, or drop it to auto-detect.")
    return layout


def _fits(layout: str, row: dict[str, Any]) -> bool:
    keys = set(row)
    return {
        "chat": "messages" in keys,
        "openai_log": ("request" in keys or "messages" in keys) and ("response" in keys or "choices" in keys),
        "sharegpt": "conversations" in keys or "conversation" in keys,
        "dolly": {"instruction", "response"} <= keys,
        "alpaca": "instruction" in keys and ("output" in keys or "response" in keys),
        "pair": any(set(pair) <= keys for pair in PAIR_KEYS),
    }[layout]


def to_chat(layout: str, row: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The chat turns (system optional, user/assistant/tool, ending with the answer) of one row, and the tools offered."""
    try:
        if layout == "dolly":
            context = _text(row, "context", optional=True)
            return _pair(_join(_text(row, "instruction"), context), _text(row, "response"), _system(row)), None
        if layout == "alpaca":
            answer_key = "output" if "output" in row else "response"
            return _pair(_join(_text(row, "instruction"), _text(row, "input", optional=True)), _text(row, answer_key), _system(row)), None
        if layout == "pair":
            prompt_key, answer_key = next(p for p in PAIR_KEYS if set(p) <= set(row))
            return _pair(_text(row, prompt_key), _text(row, answer_key), _system(row)), None
        if layout == "chat":
            return _chat(_field(row, "messages")), tools_of(row)
        if layout == "sharegpt":
            return _sharegpt(row)
        if layout == "openai_log":
            return _openai_log(row)
    except BadToolCall:
        raise Dropped("bad_tool_call") from None
    raise RowError(f"unknown layout {layout}")


def _sharegpt(row: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    turns = row.get("conversations", row.get("conversation"))
    if not isinstance(turns, list):
        raise RowError("`conversations` is not a list")
    tools = tools_of(row)
    messages: list[dict[str, Any]] = []
    head = [{"role": "system", "content": row["system"]}] if isinstance(row.get("system"), str) and row["system"].strip() else []
    for number, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise RowError("each conversation turn needs `from` and `value`")
        kind = str(turn["from"]).lower()
        role = _SHAREGPT_ROLES.get(kind)
        if role is None:
            raise Dropped("unsupported_role")
        value = turn["value"]
        if kind in _CALL_TURNS:
            calls = calls_from_json(value, number)
            if messages and messages[-1]["role"] == "assistant" and not messages[-1].get("tool_calls"):
                messages[-1]["tool_calls"] = calls  # text then a call in one reply: one assistant turn, as OpenAI has it
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": calls})
            continue
        if role == "system" and isinstance(value, str) and (found := tools_from_system(value)):
            # A Hermes system turn is the tool protocol itself; the chat template writes it again from `tools`.
            tools = tools or found
            continue
        if role == "assistant" and isinstance(value, str) and "<tool_call>" in value:
            text, calls = split_markup(value, number)
            messages.append({"role": "assistant", "content": text or None, "tool_calls": calls})
            continue
        if role == "tool":
            value = unwrap_response(result_text(value))
        messages.append({"role": role, "content": value})
    return _chat(head + messages), tools


def _openai_log(row: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    request = row.get("request", row)
    if isinstance(request, dict) and isinstance(request.get("body"), dict):
        request = request["body"]
    if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
        raise RowError("the request has no `messages` list")
    response = row.get("response", row)
    if isinstance(response, dict) and isinstance(response.get("body"), dict):
        response = response["body"]
    choices = response.get("choices") if isinstance(response, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise RowError("the response has no `choices`")
    reply = choices[0].get("message")
    if not isinstance(reply, dict):
        raise RowError("the first choice has no `message`")
    if choices[0].get("finish_reason") in ("length", "content_filter"):
        raise Dropped("truncated_answer")
    answer = {k: reply[k] for k in ("content", "tool_calls", "function_call") if k in reply}
    return _chat([*request["messages"], {"role": "assistant", **answer}]), tools_of(request)


def _chat(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise RowError("`messages` is not a non-empty list")
    messages: list[dict[str, Any]] = []
    pending: list[tuple[str, str]] = []  # (id, name) of calls not yet answered, oldest first
    for number, message in enumerate(raw):
        if not isinstance(message, dict) or "role" not in message:
            raise RowError("each message needs a `role` and `content`")
        role = {"developer": "system", "function": "tool"}.get(message["role"], message["role"])
        if role not in ("system", "user", "assistant", "tool"):
            raise Dropped("unsupported_role")
        if role == "tool":
            messages.append({"role": "tool", "content": result_text(message.get("content")), "tool_call_id": _answered(message, pending)})
            continue
        turn: dict[str, Any] = {"role": role, "content": _content(message.get("content"))}
        calls = tool_calls_of(message, number) if role == "assistant" else []
        if calls:
            turn["tool_calls"] = calls
            turn["content"] = turn["content"] or None
            pending.extend((c["id"], c["function"]["name"]) for c in calls)
        messages.append(turn)
    while messages and messages[-1]["role"] != "assistant":
        messages.pop()  # a trailing unanswered user turn (or tool result) is not a pair
    if not any(m["role"] == "user" for m in messages) or not messages:
        raise Dropped("no_answer")
    if any(not (m["content"] or "").strip() and not m.get("tool_calls") for m in messages if m["role"] in ("user", "assistant")):
        raise Dropped("empty")
    return [m for m in messages if m["role"] != "system" or m["content"].strip()]


def _answered(message: dict[str, Any], pending: list[tuple[str, str]]) -> str:
    """The call a tool result answers: its `tool_call_id`, else the oldest open call (of the same name, for `function` turns)."""
    wanted = message.get("tool_call_id")
    name = message.get("name")
    for i, (call_id, call_name) in enumerate(pending):
        if call_id == wanted or (not wanted and (not name or name == call_name)):
            return pending.pop(i)[0]
    if wanted:
        raise RowError(f"a tool result answers call {wanted!r}, which no earlier assistant turn made")
    raise Dropped("orphan_tool_result")


def _content(value: Any) -> str:
    """Message content: a string, or OpenAI content parts of which only text parts are allowed."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                raise Dropped("non_text")
        return "\n".join(texts)
    raise Dropped("non_text")


def _field(row: dict[str, Any], key: str) -> Any:
    if key not in row:
        raise RowError(f"missing field `{key}`")
    return row[key]


def _text(row: dict[str, Any], key: str, optional: bool = False) -> str:
    if optional and key not in row:
        return ""
    value = _field(row, key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Dropped("non_text")
    return value


def _system(row: dict[str, Any]) -> str:
    value = row.get("system")
    return value if isinstance(value, str) else ""


def _join(instruction: str, extra: str) -> str:
    return f"{instruction.strip()}\n\n{extra.strip()}" if extra.strip() else instruction.strip()


def _pair(user: str, answer: str, system: str = "") -> list[dict[str, str]]:
    if not user.strip() or not answer.strip():
        raise Dropped("empty")
    head = [{"role": "system", "content": system}] if system.strip() else []
    return [*head, {"role": "user", "content": user}, {"role": "assistant", "content": answer}]


# ---- satisfaction and other metadata ------------------------------------------------------------


def metadata_of(row: dict[str, Any]) -> dict[str, Any]:
    """Rating, satisfaction flag, tags and timestamp of a row (top level or under `metadata`)."""
    pools = [row] + [row[k] for k in ("metadata", "meta") if isinstance(row.get(k), dict)]
    found: dict[str, Any] = {}
    for pool in pools:
        for key in RATING_KEYS:
            if "rating" not in found and (value := _number(pool.get(key))) is not None:
                found["rating"] = value
        for key in FLAG_KEYS:
            if "satisfied" not in found and (flag := _flag(pool.get(key))) is not None:
                found["satisfied"] = flag
        for key in TAG_KEYS:
            if "tags" not in found and (tags := _tags(pool.get(key))):
                found["tags"] = tags
        for key in TIME_KEYS:
            if "timestamp" not in found and pool.get(key) not in (None, ""):
                found["timestamp"] = _timestamp(pool[key])
    response = row.get("response")
    if isinstance(response, dict):
        body = response.get("body", response)
        if isinstance(body, dict) and body.get("model"):
            found["service_model"] = str(body["model"])
        if isinstance(body, dict) and "timestamp" not in found and body.get("created"):
            found["timestamp"] = _timestamp(body["created"])
    return found


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value > 0
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "yes", "y", "1", "up", "👍"):
            return True
        if lowered in ("false", "no", "n", "0", "down", "👎"):
            return False
    return None


def _tags(value: Any) -> list[str]:
    if isinstance(value, str) and value.strip():
        return [value.strip()]
    if isinstance(value, list):
        return [str(v) for v in value if isinstance(v, str | int | float) and str(v).strip()]
    return []


def _timestamp(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(float(value), dt.timezone.utc).isoformat()
    return str(value)
