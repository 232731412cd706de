"""Records that flow between stages: a chat example of the coverage dataset and a local model's answer."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, Field

Role = Literal["system", "user", "assistant"]


class Message(BaseModel):
    role: Role
    content: str


class Example(BaseModel):
    """One coverage-dataset item: a chat whose last turn is the satisfactory service-LLM answer."""

    id: str
    """Stable content hash of task + messages."""
    task: str
    messages: list[Message]
    source: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def prompt(self) -> list[Message]:
        """Every turn before the final assistant answer."""
        return self.messages[:-1] if self.messages and self.messages[-1].role == "assistant" else list(self.messages)

    @property
    def reference(self) -> str | None:
        """The satisfactory answer, if there is one."""
        return self.messages[-1].content if self.messages and self.messages[-1].role == "assistant" else None

    @property
    def instruction(self) -> str:
        """The last user turn."""
        return next((m.content for m in reversed(self.messages) if m.role == "user"), "")

    @staticmethod
    def content_id(task: str, messages: list[Message] | list[dict[str, Any]]) -> str:
        """The id is a hash of what the example says, so the same pair always gets the same id."""
        plain = [m.model_dump() if isinstance(m, Message) else {"role": m["role"], "content": m["content"]} for m in messages]
        blob = json.dumps({"task": task, "messages": plain}, sort_keys=True, ensure_ascii=False)
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
    finish_reason: str = "stop"
    """`stop` when the model emitted its end-of-turn token, `length` when it hit max tokens."""
    model: str = ""
    """Fingerprint of the model that answered."""
    params: dict[str, Any] = Field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)
