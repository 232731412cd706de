"""The provider contract: one request in (`ProviderCall`), one reply out (`ProviderReply`), failures as ProviderFailure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from llamaduo.service.structured import Schema
from llamaduo.service.types import Usage


@dataclass
class ProviderCall:
    messages: list[dict[str, Any]]
    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    n: int = 1
    schema: Schema | None = None


@dataclass
class ProviderReply:
    texts: list[str]
    """One text per sample (`n`)."""
    usage: Usage
    """Usage of the whole request (input billed once, output summed over the samples)."""
    finish_reasons: list[str | None] = field(default_factory=list)


@dataclass
class BatchState:
    status: str
    """`pending`, `done` or `failed`."""
    detail: str = ""
    result_ref: Any = None
    """What `fetch_batch` needs (e.g. OpenAI's output and error file ids)."""


class Provider(Protocol):
    name: str
    supports_n: bool
    supports_batch: bool

    async def complete(self, call: ProviderCall) -> ProviderReply:
        """One request; raise ProviderFailure (never an SDK exception) when it fails."""

    async def submit_batch(self, items: list[tuple[str, ProviderCall]], job_key: str) -> str:
        """Submit (custom_id, call) pairs as one batch job; return the provider's job id."""

    async def find_batch(self, job_key: str, *, since: float, count: int) -> str | None:
        """The id of a job submitted with this tag (at or after unix time `since`, holding `count` requests), or None."""

    async def poll_batch(self, job_id: str) -> BatchState: ...

    async def fetch_batch(self, state: BatchState, job_id: str) -> dict[str, ProviderReply | Exception]:
        """Results by custom_id; a failed item maps to a ProviderFailure."""

    async def aclose(self) -> None: ...


def finish_reason(raw: str | None) -> str | None:
    """One vocabulary for every provider: stop, length, or the provider's own word."""
    if raw is None:
        return None
    lowered = str(raw).lower()
    if lowered in ("end_turn", "stop_sequence", "tool_use", "stop", "finish_reason_stop"):
        return "stop"
    if lowered in ("max_tokens", "length", "finish_reason_max_tokens"):
        return "length"
    return lowered
