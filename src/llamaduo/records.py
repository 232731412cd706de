"""Records that flow between stages: a chat example of the coverage dataset and a local model's answer."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, field_validator, model_serializer, model_validator

Role = Literal["system", "user", "assistant", "tool"]


class FunctionCall(BaseModel):
    name: str
    arguments: str = "{}"
    """JSON text, as the OpenAI API sends it; a dict (HF templates, ShareGPT logs) is serialised on the way in."""

    @field_validator("arguments", mode="before")
    @classmethod
    def _json_text(cls, value: Any) -> Any:
        if value is None:
            return "{}"
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    def parsed_arguments(self) -> Any:
        """The arguments as JSON, or None when the text does not parse (a wrong call, not a crash)."""
        try:
            return json.loads(self.arguments) if self.arguments.strip() else {}
        except ValueError:
            return None


class ToolCall(BaseModel):
    """One call in the OpenAI shape: {id, type: "function", function: {name, arguments}}."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    role: Role
    content: str | None = None
    """Text of the turn; None only on an assistant turn that makes tool calls (as the OpenAI API allows)."""
    tool_calls: list[ToolCall] | None = None
    """The functions an assistant turn calls."""
    tool_call_id: str | None = None
    """On a `tool` turn: which call this is the result of."""

    @model_validator(mode="after")
    def _shape(self) -> Message:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a {self.role} turn needs content (only an assistant turn with tool_calls may omit it)")
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError(f"only assistant turns carry tool_calls, not {self.role}")
        return self

    @model_serializer(mode="wrap")
    def _openai_shape(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Plain turns dump as {role, content} exactly as before, so ids, stores and prompts of
        # text-only data do not change; the tool fields appear only where they say something.
        data = handler(self)
        for key in ("tool_calls", "tool_call_id"):
            if data.get(key) is None:
                data.pop(key, None)
        return data

    @property
    def text(self) -> str:
        """The turn as text, tool calls included: what stats, dedup, decontamination and judges read."""
        parts = [self.content] if self.content else []
        parts += [tool_call_text(c) for c in self.tool_calls or []]
        return "\n".join(parts)


def tool_call_text(call: ToolCall) -> str:
    """A call as one line of text in the Hermes/Qwen convention (also the fallback chat-template format)."""
    args = call.function.parsed_arguments()
    # Argument keys are sorted so that the same call written in another key order reads (and dedups) the same.
    arguments = json.dumps(args if args is not None else call.function.arguments, ensure_ascii=False, sort_keys=True)
    return f'<tool_call>{{"name": {json.dumps(call.function.name, ensure_ascii=False)}, "arguments": {arguments}}}</tool_call>'


class Example(BaseModel):
    """One coverage-dataset item: a chat whose last turn is the satisfactory service-LLM answer."""

    id: str
    """Stable content hash of task + messages (+ tools when offered)."""
    task: str
    messages: list[Message]
    tools: list[dict[str, Any]] | None = None
    """OpenAI tool definitions offered to the model: {type: "function", function: {name, description, parameters}}."""
    source: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_serializer(mode="wrap")
    def _drop_no_tools(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if data.get("tools") is None:
            data.pop("tools", None)
        return data

    @property
    def prompt(self) -> list[Message]:
        """Every turn before the final assistant answer."""
        return self.messages[:-1] if self.messages and self.messages[-1].role == "assistant" else list(self.messages)

    @property
    def reference(self) -> str | None:
        """The satisfactory answer as text (tool calls written out), if there is one."""
        return self.messages[-1].text if self.messages and self.messages[-1].role == "assistant" else None

    @property
    def reference_tool_calls(self) -> list[ToolCall] | None:
        """The tool calls of the satisfactory answer (None when it calls nothing)."""
        last = self.messages[-1] if self.messages else None
        return last.tool_calls if last is not None and last.role == "assistant" else None

    @property
    def instruction(self) -> str:
        """The last user turn."""
        return next((m.content or "" for m in reversed(self.messages) if m.role == "user"), "")

    @staticmethod
    def content_id(task: str, messages: list[Message] | list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        """The id is a hash of what the example says, so the same pair always gets the same id.

        Text-only examples hash exactly as they did before tool calling existed (tests pin that)."""
        plain = [m.model_dump() if isinstance(m, Message) else Message.model_validate(m).model_dump() for m in messages]
        body: dict[str, Any] = {"task": task, "messages": plain}
        if tools:
            body["tools"] = tools
        blob = json.dumps(body, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


class Answer(BaseModel):
    """A local model's answer to one test prompt (one of K samples)."""

    example_id: str
    task: str
    sample: int = 0
    """Index among the K samples of this prompt."""
    messages: list[Message]
    """The prompt turns the model saw."""
    rendered_prompt: str = ""
    """The exact text after the chat template."""
    reference: str | None = None
    text: str
    """The answer's text content ("" when it only calls tools)."""
    tool_calls: list[ToolCall] | None = None
    """The functions the answer calls, parsed from the model's output."""
    finish_reason: str = "stop"
    """`stop` when the model emitted its end-of-turn token, `length` when it hit max tokens."""
    model: str = ""
    """Fingerprint of the model that answered."""
    params: dict[str, Any] = Field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def full_text(self) -> str:
        """The answer as text, tool calls written out as in `Message.text`: what text metrics and judges read."""
        return "\n".join([self.text] * bool(self.text) + [tool_call_text(c) for c in self.tool_calls or []])
