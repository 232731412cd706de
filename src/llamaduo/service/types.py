"""Records of the service-LLM layer: what one chat call returns and what it cost."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Usage(BaseModel):
    input_tokens: int = 0
    cached_input_tokens: int = 0
    """Input tokens served from the provider's prompt cache (billed at the cached price)."""
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
        )


class ChatResult(BaseModel):
    """One reply of a service LLM."""

    text: str
    parsed: Any | None = None
    """The validated object when a schema was given."""
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    """What this reply cost; 0 on a cache hit."""
    latency_s: float = 0.0
    cache_hit: bool = False
    provider: str = ""
    model: str = ""
    finish_reason: str | None = None
    sample: int = 0
    """Index among repeated samples of the same prompt."""


class ChatRequest(BaseModel):
    """One prompt of a `chat_many` call."""

    model_config = {"arbitrary_types_allowed": True}

    messages: list[Any]
    """`{"role", "content"}` dicts or `records.Message`."""
    params: dict[str, Any] | None = None
    """Overrides of the role's generation params (temperature, max_tokens, top_p, seed)."""
    schema_: Any | None = Field(None, alias="schema")
    """A pydantic model class or a JSON-schema dict; the reply is then validated and parsed."""
    sample: int = 0
    """Index among repeated samples of the same prompt (a distinct cache entry each)."""

    def __init__(self, messages: list[Any] | None = None, **data: Any):
        if messages is not None:
            data["messages"] = messages
        super().__init__(**data)

    @property
    def schema(self) -> Any | None:  # type: ignore[override]
        return self.schema_
