"""Failures of the service-LLM layer: one-line, key-free messages the CLI prints as they are."""

from __future__ import annotations

from llamaduo.errors import LlamaduoError
from llamaduo.service.types import Usage


class ServiceError(LlamaduoError):
    """A service-LLM call failed for good (after retries, or at once for 400/401/403)."""

    def __init__(self, problem: str, fix: str | None = None, *, status: int | None = None, retryable: bool = False):
        from llamaduo.service.keys import scrub

        super().__init__(scrub(problem), scrub(fix) if fix else fix)
        self.status = status
        self.retryable = retryable


class StructuredOutputError(ServiceError):
    """The reply did not match the schema, even after one repair request (whose usage was still paid for)."""

    def __init__(self, problem: str, fix: str | None = None, *, repair_usage: Usage | None = None):
        super().__init__(problem, fix)
        self.repair_usage = repair_usage or Usage()


class ProviderFailure(Exception):
    """One failed attempt, already translated from the SDK's exception; the retry policy decides what follows.

    `kind` is one of: rate_limit, server, timeout, connection, unreachable, client, auth.
    """

    def __init__(self, kind: str, message: str, *, status: int | None = None, retry_after: float | None = None):
        from llamaduo.service.keys import scrub

        super().__init__(scrub(message))
        self.kind = kind
        self.status = status
        self.retry_after = retry_after

    @property
    def message(self) -> str:
        return str(self)
