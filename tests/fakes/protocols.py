"""Wire formats of the fake service server: read a provider's request, build that provider's reply.

Covers OpenAI chat-completions (with tool calls, and SSE streams chunked as OpenAI sends them), Anthropic messages and
Gemini generateContent, plus a tiny JSON-schema instance generator so schema-constrained requests get a valid default
reply.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ChatCall:
    """What one chat request asked for, in one shape for every provider. Responders receive this."""

    api: str
    """`openai`, `anthropic` or `gemini`."""
    model: str
    messages: list[dict[str, str]]
    """Plain role/content turns, the system prompt first (as role `system`)."""
    body: dict[str, Any]
    n: int = 1
    schema: dict[str, Any] | None = None
    """The JSON schema the client asked the reply to follow (response_format, forced tool, responseJsonSchema)."""
    index: int = 0
    """Which of the `n` choices is being produced."""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def last_user(self) -> str:
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")


@dataclass
class ToolCalls:
    """A scripted OpenAI reply that calls functions: (name, arguments) pairs, optionally after some content."""

    calls: list[tuple[str, dict[str, Any]]]
    content: str | None = None

    def text(self) -> str:
        return (self.content or "") + json.dumps([{"name": n, "arguments": a} for n, a in self.calls])

    def wire(self, ids: list[str] | None = None) -> list[dict[str, Any]]:
        ids = ids or [f"call_{uuid.uuid4().hex[:24]}" for _ in self.calls]
        return [{"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps(a)}} for i, (n, a) in zip(ids, self.calls)]


Reply = str | ToolCalls


def tokens(text: str) -> int:
    """A stable stand-in for a tokenizer: about four characters a token."""
    return max(1, len(text) // 4)


def default_reply(call: ChatCall) -> Reply:
    """Deterministic: a call of the forced function (OpenAI tool_choice required or named) with a schema instance as
    its arguments; a schema instance for structured requests; else an echo of the last user turn."""
    forced = forced_function(call.body) if call.api == "openai" else None
    if forced is not None:
        return ToolCalls([(forced["name"], instance_of(forced.get("parameters") or {}, forced.get("parameters") or {}))])
    if call.schema is not None:
        return json.dumps(instance_of(call.schema, call.schema))
    suffix = f" (sample {call.index})" if call.index else ""
    return f"reply to: {call.last_user[:200]}{suffix}"


def instance_of(schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """A small valid instance of a JSON schema (objects, arrays, enums, $ref, numbers within bounds)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return instance_of((root.get("$defs") or root.get("definitions") or {})[name], root)
    if "default" in schema:
        return schema["default"]
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for combo in ("anyOf", "oneOf", "allOf"):
        if combo in schema:
            options = [s for s in schema[combo] if s.get("type") != "null"] or schema[combo]
            return instance_of(options[0], root)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        props = schema.get("properties") or {}
        return {key: instance_of(sub, root) for key, sub in props.items()}
    if kind == "array":
        return [instance_of(schema.get("items") or {"type": "string"}, root)] * max(1, schema.get("minItems", 1))
    if kind in ("integer", "number"):
        lo, hi = schema.get("minimum", 0), schema.get("maximum", 100)
        value = (lo + hi) / 2 if hi >= lo else lo
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    return "ok"


# ---- OpenAI ----------------------------------------------------------------------------------


def forced_function(body: dict[str, Any]) -> dict[str, Any] | None:
    """The function definition an OpenAI request forces (tool_choice required: the first one), or None."""
    functions = [t.get("function") or {} for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = body.get("tool_choice")
    if not functions or choice in (None, "auto", "none"):
        return None
    if choice == "required":
        return functions[0]
    name = ((choice or {}).get("function") or {}).get("name") if isinstance(choice, dict) else None
    return next((f for f in functions if f.get("name") == name), None)


def openai_call(body: dict[str, Any], headers: dict[str, str]) -> ChatCall:
    messages = [{"role": m.get("role", "user"), "content": _text(m.get("content"))} for m in body.get("messages", [])]
    fmt = body.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None
    return ChatCall("openai", body.get("model", ""), messages, body, n=int(body.get("n") or 1), schema=schema, headers=headers)


def _message(reply: Reply) -> tuple[dict[str, Any], str]:
    if isinstance(reply, ToolCalls):
        return {"role": "assistant", "content": reply.content, "tool_calls": reply.wire(), "refusal": None}, "tool_calls"
    return {"role": "assistant", "content": reply}, "stop"


def reply_text(reply: Reply) -> str:
    return reply.text() if isinstance(reply, ToolCalls) else reply


def openai_completion(call: ChatCall, texts: list[Reply], cached: int) -> dict[str, Any]:
    prompt = tokens(json.dumps(call.messages))
    completion = sum(tokens(reply_text(t)) for t in texts)
    choices = []
    for i, t in enumerate(texts):
        message, finish = _message(t)
        choices.append({"index": i, "message": message, "finish_reason": finish, "logprobs": None})
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": call.model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": min(cached, prompt)},
        },
    }


def openai_stream(call: ChatCall, texts: list[Reply], cached: int, piece: int = 4) -> bytes:
    """The same answer as SSE, chunked as OpenAI streams it: a role chunk, content in pieces of `piece` characters; a
    call's first delta with id, type and name, then its arguments in fragments; a finish chunk per choice, the usage
    chunk when stream_options.include_usage asks for it, and [DONE]."""
    whole = openai_completion(call, texts, cached)
    head = {k: whole[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk", "system_fingerprint": "fp_fake"}
    events = []

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> None:
        events.append({**head, "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}]})

    for choice in whole["choices"]:
        i, message = choice["index"], choice["message"]
        content = message.get("content")
        chunk(i, {"role": "assistant", "content": "" if content is not None or not message.get("tool_calls") else None, "refusal": None})
        for start in range(0, len(content or ""), piece):
            chunk(i, {"content": content[start:start + piece]})
        for k, tc in enumerate(message.get("tool_calls") or []):
            fn = tc["function"]
            chunk(i, {"tool_calls": [{"index": k, "id": tc["id"], "type": "function", "function": {"name": fn["name"], "arguments": ""}}]})
            for start in range(0, len(fn["arguments"]), piece):
                chunk(i, {"tool_calls": [{"index": k, "function": {"arguments": fn["arguments"][start:start + piece]}}]})
        chunk(i, {}, choice["finish_reason"])
    if (call.body.get("stream_options") or {}).get("include_usage"):
        events.append({**head, "choices": [], "usage": whole["usage"]})
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"


def openai_error(status: int, message: str, kind: str = "error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": str(status)}}


# ---- Anthropic -------------------------------------------------------------------------------


def anthropic_call(body: dict[str, Any], headers: dict[str, str]) -> ChatCall:
    system = body.get("system")
    messages = [{"role": "system", "content": _text(system)}] if system else []
    messages += [{"role": m.get("role", "user"), "content": _text(m.get("content"))} for m in body.get("messages", [])]
    schema = None
    choice = body.get("tool_choice") or {}
    if choice.get("type") == "tool":
        schema = next((t.get("input_schema") for t in body.get("tools", []) if t.get("name") == choice.get("name")), None)
    return ChatCall("anthropic", body.get("model", ""), messages, body, schema=schema, headers=headers)


def anthropic_message(call: ChatCall, text: Reply, cached: int) -> dict[str, Any]:
    text = reply_text(text)
    prompt = tokens(json.dumps(call.messages))
    if call.schema is not None:
        try:
            tool_input = json.loads(text)
        except json.JSONDecodeError:
            tool_input = {"_raw": text}
        name = (call.body.get("tool_choice") or {}).get("name", "reply")
        content = [{"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:12]}", "name": name, "input": tool_input}]
        stop = "tool_use"
    else:
        content = [{"type": "text", "text": text}]
        stop = "end_turn"
    cached = min(cached, prompt)
    return {
        "id": f"msg_{uuid.uuid4().hex[:12]}",
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": prompt - cached, "output_tokens": tokens(text), "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0},
    }


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    kinds = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 429: "rate_limit_error", 529: "overloaded_error"}
    return {"type": "error", "error": {"type": kinds.get(status, "api_error"), "message": message}}


# ---- Gemini ----------------------------------------------------------------------------------


def gemini_call(model: str, body: dict[str, Any], headers: dict[str, str]) -> ChatCall:
    messages = []
    system = body.get("systemInstruction") or body.get("system_instruction")
    if system:
        messages.append({"role": "system", "content": "".join(p.get("text", "") for p in system.get("parts", []))})
    for turn in body.get("contents", []):
        role = "assistant" if turn.get("role") == "model" else "user"
        messages.append({"role": role, "content": "".join(p.get("text", "") for p in turn.get("parts", []))})
    config = body.get("generationConfig") or {}
    schema = config.get("responseJsonSchema") or config.get("responseSchema")
    return ChatCall("gemini", model, messages, body, n=int(config.get("candidateCount") or 1), schema=schema, headers=headers)


def gemini_response(call: ChatCall, texts: list[Reply], cached: int) -> dict[str, Any]:
    texts = [reply_text(t) for t in texts]
    prompt = tokens(json.dumps(call.messages))
    out = sum(tokens(t) for t in texts)
    return {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": t}]}, "finishReason": "STOP", "index": i} for i, t in enumerate(texts)
        ],
        "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": out, "totalTokenCount": prompt + out, "cachedContentTokenCount": min(cached, prompt)},
        "modelVersion": call.model,
    }


def gemini_error(status: int, message: str) -> dict[str, Any]:
    names = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
    return {"error": {"code": status, "message": message, "status": names.get(status, "UNKNOWN")}}


def _text(content: Any) -> str:
    """Message content may be a string or a list of typed parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)
