"""Record layouts (chat, OpenAI logs, ShareGPT, Alpaca, Dolly, prompt/response pairs) turned into chat messages.

`to_messages` returns the chat turns of one row or raises `RowError` (malformed row) or `Dropped`
(well-formed but not usable: empty, non-text, no answer). Satisfaction metadata is read separately.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from llamaduo.data.formats import RowError
from llamaduo.errors import LlamaduoError

LAYOUTS = ("chat", "openai_log", "sharegpt", "alpaca", "dolly", "pair")
PAIR_KEYS = (("prompt", "response"), ("prompt", "completion"), ("question", "answer"), ("input", "output"), ("query", "response"))
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bing": "assistant", "system": "system"}
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


def to_messages(layout: str, row: dict[str, Any]) -> list[dict[str, str]]:
    """The chat turns (system optional, user/assistant, ending with the answer) of one row."""
    if layout == "dolly":
        context = _text(row, "context", optional=True)
        return _pair(_join(_text(row, "instruction"), context), _text(row, "response"), _system(row))
    if layout == "alpaca":
        answer_key = "output" if "output" in row else "response"
        return _pair(_join(_text(row, "instruction"), _text(row, "input", optional=True)), _text(row, answer_key), _system(row))
    if layout == "pair":
        prompt_key, answer_key = next(p for p in PAIR_KEYS if set(p) <= set(row))
        return _pair(_text(row, prompt_key), _text(row, answer_key), _system(row))
    if layout == "chat":
        return _chat(_field(row, "messages"))
    if layout == "sharegpt":
        turns = row.get("conversations", row.get("conversation"))
        if not isinstance(turns, list):
            raise RowError("`conversations` is not a list")
        messages = []
        for turn in turns:
            if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
                raise RowError("each conversation turn needs `from` and `value`")
            role = _SHAREGPT_ROLES.get(str(turn["from"]).lower())
            if role is None:
                raise Dropped("unsupported_role")
            messages.append({"role": role, "content": turn["value"]})
        return _chat(messages)
    if layout == "openai_log":
        return _openai_log(row)
    raise RowError(f"unknown layout {layout}")


def _openai_log(row: dict[str, Any]) -> list[dict[str, str]]:
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
    return _chat([*request["messages"], {"role": "assistant", "content": reply.get("content")}])


def _chat(raw: Any) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise RowError("`messages` is not a non-empty list")
    messages = []
    for message in raw:
        if not isinstance(message, dict) or "role" not in message:
            raise RowError("each message needs a `role` and `content`")
        role = message["role"]
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise Dropped("unsupported_role")  # tool and function turns are not training text
        messages.append({"role": role, "content": _content(message.get("content"))})
    while messages and messages[-1]["role"] != "assistant":
        messages.pop()  # a trailing unanswered user turn is not a pair
    if not any(m["role"] == "user" for m in messages) or not messages:
        raise Dropped("no_answer")
    if any(not m["content"].strip() for m in messages if m["role"] != "system"):
        raise Dropped("empty")
    return [m for m in messages if m["role"] != "system" or m["content"].strip()]


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
