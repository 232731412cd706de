"""The OpenAI wire format that `serve` and `gateway` speak: request models, error bodies and response builders."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from llamaduo.infer.engines.base import ANY_JSON
from llamaduo.infer.engines.tools import ToolSpecError, check_tools, resolve_choice


class ApiError(Exception):
    """An HTTP error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Wire(BaseModel):
    # Clients send many optional OpenAI fields (user, metadata...): unknown ones are ignored, not fatal. Known ones are
    # typed strictly, as OpenAI does: `stream: "yes"` or `temperature: "0.5"` is a 400, not a guess.
    model_config = ConfigDict(extra="ignore", strict=True)


class ContentPart(_Wire):
    type: str
    text: str | None = None


class FunctionCall(_Wire):
    name: str
    arguments: str


class ToolCall(_Wire):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Wire):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = Field(None, validate_default=True)
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    """An earlier assistant turn's calls (arguments as JSON text, as OpenAI sends them)."""
    tool_call_id: str | None = None
    """On a tool turn: the call it answers."""

    @field_validator("content")
    @classmethod
    def _has_content(cls, content: Any, info: ValidationInfo) -> Any:
        # Only an assistant turn may come without content (OpenAI's tool-call turns); a user turn without one
        # would otherwise render as an empty prompt and the model would answer a question nobody asked.
        role = info.data.get("role")
        if role not in (None, "assistant") and (content is None or content == []):
            raise ValueError(f"a {role} message needs content: a string or a list of text parts")
        return content

    def plain(self) -> dict[str, Any]:
        """The message as the chat template expects it: a role and a string (developer maps to system), plus the
        OpenAI-shape tool_calls / tool_call_id of tool turns, which engines/tools.py renders."""
        if isinstance(self.content, list):
            if any(p.type != "text" for p in self.content):
                raise ApiError(400, "only text content parts are supported by this server", param="messages")
            text = "".join(p.text or "" for p in self.content)
        else:
            text = self.content or ""
        plain: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role, "content": text}
        if self.tool_calls:
            plain["tool_calls"] = [c.model_dump() for c in self.tool_calls]
        if self.role == "tool" and self.tool_call_id is not None:
            plain["tool_call_id"] = self.tool_call_id
        return plain


class ResponseFormat(_Wire):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: dict[str, Any] | None = None


class StreamOptions(_Wire):
    include_usage: bool = False


class _GenFields(_Wire):
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    # Known OpenAI fields the engines do not implement: typed, so a wrong type is a 400, and refused when they
    # would change the answer (see `_unsupported`); in local mode the gateway sends such requests to the service.
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None

    @property
    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def _unsupported(self) -> list[str]:
        asked = []
        if self.frequency_penalty:
            asked.append("frequency_penalty")
        if self.presence_penalty:
            asked.append("presence_penalty")
        if self.logit_bias:
            asked.append("logit_bias")
        return asked

    @model_validator(mode="after")
    def _refuse_unsupported(self) -> _GenFields:
        asked = self._unsupported()
        if asked:
            # An ApiError, not a ValueError: pydantic lets it through as it is, with its own param.
            raise ApiError(400, f"{asked[0]} is not supported by llamaduo serve; send the request without it", param=asked[0])
        return self


class ChatRequest(_GenFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    response_format: ResponseFormat | None = None
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = None
    function_call: str | dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)

    def _unsupported(self) -> list[str]:
        return super()._unsupported() + (["logprobs"] if self.logprobs or self.top_logprobs else [])

    def tool_setup(self) -> tuple[list[dict[str, Any]] | None, str, str | None]:
        """(validated tools or None, none|auto|required, the forced function's name); a bad definition is a 400."""
        if self.functions is not None or self.function_call is not None:
            param = "functions" if self.functions is not None else "function_call"
            raise ApiError(400, f"{param} is OpenAI's deprecated form; send the definitions as tools=[{{type: function, function: ...}}] "
                                "and the choice as tool_choice", param=param)
        try:
            tools = check_tools(self.tools) if self.tools is not None else None
            mode, forced = resolve_choice(self.tool_choice, tools)
        except ToolSpecError as exc:
            raise ApiError(400, str(exc), param=exc.param) from None
        return tools, mode, forced

    def json_schema(self) -> dict[str, Any] | str | None:
        rf = self.response_format
        if rf is None or rf.type == "text":
            return None
        if rf.type == "json_object":
            return ANY_JSON
        schema = (rf.json_schema or {}).get("schema")
        if not isinstance(schema, dict):
            raise ApiError(400, "response_format.json_schema.schema must be a JSON schema object", param="response_format")
        return schema


class CompletionRequest(_GenFields):
    prompt: str | list[str] | list[int]
    max_tokens: int | None = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    best_of: int | None = Field(None, ge=1, le=16)
    suffix: str | None = None

    def _unsupported(self) -> list[str]:
        asked = super()._unsupported()
        asked += ["logprobs"] if self.logprobs else []
        asked += ["echo"] if self.echo else []
        asked += ["best_of"] if self.best_of is not None and self.best_of != self.n else []
        asked += ["suffix"] if self.suffix else []
        return asked

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: Any) -> Any:
        if isinstance(value, list) and value and isinstance(value[0], str):
            if len(value) != 1:
                raise ValueError("send one prompt per request")
            return value[0]
        return value


# What a field holds, for the message when a value has the wrong type. Union fields would otherwise report only
# their first alternative ("stop: Input should be a valid string" for a list of numbers).
EXPECTED = {
    "stop": "a string or a list of strings",
    "content": "a string or a list of content parts",
    "prompt": "a string, a list of one string or a list of token ids",
    "tool_choice": "a string or an object",
}
# Names pydantic puts in an error's location for the union alternative that failed; they are no part of the field path.
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if isinstance(p, int) or (re.fullmatch(r"[a-z_][a-z0-9_]*", str(p)) and p not in _TYPE_TAGS)]
    return ".".join(parts) or None


def parse_body(raw: bytes, model: type[BaseModel]) -> Any:
    """Parse and validate a JSON body; any problem is a 400 naming the field."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = _param(err["loc"])
        field = where.split(".")[-1] if where else None
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] in ("string_type", "list_type", "dict_type", "int_type", "float_type", "bool_type", "model_type") and field in EXPECTED:
            value = _at(data, err["loc"])
            got = f"an array holding {_json_type(value[0])}" if isinstance(value, list) and value else _json_type(value)
            msg = f"expected {EXPECTED[field]}, got {got}"
        raise ApiError(400, f"{where}: {msg}" if where else msg, param=where) from None


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array", dict: "an object"}
    return names.get(type(value), "null")


def _at(data: Any, loc: tuple[Any, ...]) -> Any:
    """The value a validation error points at (union tags in the location are skipped)."""
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
    return data


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}


def chat_response(rid: str, model: str, choices: list[tuple[str | dict[str, Any], str]], prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """Each choice is (text, finish_reason), or (message fields such as content and tool_calls, finish_reason)."""
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "message": {"role": "assistant", **(body if isinstance(body, dict) else {"content": body})},
             "finish_reason": reason, "logprobs": None}
            for i, (body, reason) in enumerate(choices)
        ],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chat_chunk(rid: str, model: str, created: int, delta: dict[str, Any] | None, finish: str | None, use: dict | None = None) -> dict:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
    chunk = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices}
    if use is not None:
        chunk["usage"] = use
    return chunk


def tool_call_delta(index: int, arguments: str = "", *, call_id: str | None = None, name: str | None = None) -> dict[str, Any]:
    """A streamed tool call, as OpenAI sends it: the first delta carries id, type and name, the next ones the arguments."""
    call: dict[str, Any] = {"index": index}
    if call_id is not None:
        call.update(id=call_id, type="function", function={"name": name, "arguments": arguments})
    else:
        call["function"] = {"arguments": arguments}
    return {"tool_calls": [call]}


def completion_response(rid: str, model: str, choices: list[tuple[str, str]], prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": i, "text": text, "finish_reason": reason, "logprobs": None} for i, (text, reason) in enumerate(choices)],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def completion_chunk(rid: str, model: str, created: int, text: str | None, finish: str | None, use: dict | None = None) -> dict:
    choices = [] if text is None else [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]
    chunk = {"id": rid, "object": "text_completion", "created": created, "model": model, "choices": choices}
    if use is not None:
        chunk["usage"] = use
    return chunk


def sse(data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {payload}\n\n".encode()
