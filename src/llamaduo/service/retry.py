"""Retry policy as pure functions plus constants: what to retry, how long to wait, and Retry-After parsing.

The SDKs' own retries are switched off (max_retries=0) so every attempt is ours, counted and limited.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from llamaduo.service.errors import ProviderFailure, ServiceError

RETRYABLE_KINDS = frozenset({"rate_limit", "server", "timeout", "connection", "unreachable"})
# A server that refuses connections is usually down or a wrong base_url: a short retry covers a restart,
# a long one only delays the error the user needs to see.
MAX_UNREACHABLE_RETRIES = 2
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
# A Retry-After this long means "come back tomorrow"; waiting would only hang the stage.
MAX_RETRY_AFTER_S = 600.0
JITTER = 0.25

T = TypeVar("T")


def kind_of_status(status: int) -> str:
    """Classify an HTTP status: rate_limit and server are retried, auth and client fail fast."""
    if status == 429:
        return "rate_limit"
    if status in (401, 403):
        return "auth"
    if status in RETRYABLE_STATUS or status >= 500:
        return "server"
    return "client"


def should_retry(failure: ProviderFailure, attempt: int, max_retries: int) -> bool:
    if failure.kind == "unreachable":
        max_retries = min(max_retries, MAX_UNREACHABLE_RETRIES)
    return failure.kind in RETRYABLE_KINDS and attempt < max_retries


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, `retry-after` (seconds or an HTTP date); None if absent or absurd."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    raw_ms = lower.get("retry-after-ms")
    if raw_ms is not None:
        try:
            seconds = float(raw_ms) / 1000.0
        except ValueError:
            seconds = None
        if seconds is not None and 0 <= seconds <= MAX_RETRY_AFTER_S:
            return seconds
    raw = lower.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        when = email.utils.parsedate_tz(raw)
        if when is None:
            return None
        seconds = email.utils.mktime_tz(when) - (time.time() if now is None else now)
    return max(0.0, seconds) if seconds <= MAX_RETRY_AFTER_S else None


def backoff_delay(attempt: int, base_s: float, max_s: float, random01: float) -> float:
    """Exponential backoff with jitter: base * 2**attempt, capped, then shortened by up to 25% at random.

    Jitter spreads the retries of many concurrent callers so they do not hit the server in lockstep.
    """
    delay = min(max_s, base_s * (2**attempt))
    return delay * (1 - JITTER * random01)


def retry_delay(failure: ProviderFailure, attempt: int, base_s: float, max_s: float, random01: float) -> float:
    """The server's Retry-After wins when it gives one (even past `max_s`); else our backoff."""
    if failure.retry_after is not None:
        return failure.retry_after
    return backoff_delay(attempt, base_s, max_s, random01)


async def call_with_retries(
    attempt_fn: Callable[[], Awaitable[T]],
    *,
    max_retries: int,
    base_s: float,
    max_s: float,
    sleep: Callable[[float], Awaitable[None]],
    random01: Callable[[], float],
    what: str,
    on_retry: Callable[[ProviderFailure, float], None] | None = None,
) -> T:
    """Run `attempt_fn` until it succeeds, a failure is not retryable, or retries run out (then ServiceError)."""
    attempt = 0
    while True:
        try:
            return await attempt_fn()
        except ProviderFailure as failure:
            if not should_retry(failure, attempt, max_retries):
                raise _final_error(failure, what, attempt) from None
            delay = retry_delay(failure, attempt, base_s, max_s, random01())
            if on_retry is not None:
                on_retry(failure, delay)
            await sleep(delay)
            attempt += 1


def _final_error(failure: ProviderFailure, what: str, attempt: int) -> ServiceError:
    status = f" (HTTP {failure.status})" if failure.status else ""
    if failure.kind == "auth":
        return ServiceError(
            f"{what} refused the request{status}: {failure.message}",
            "Check the API key variable and that the key may use this model.",
            status=failure.status,
        )
    if failure.kind == "client":
        return ServiceError(f"{what} rejected the request{status}: {failure.message}", "Check the model name and parameters.", status=failure.status)
    tries = f" after {attempt + 1} attempts" if attempt else ""
    fix = (
        "Check that the server (base_url) is running and reachable."
        if failure.kind in ("connection", "unreachable")
        else "Try again later, or raise the role's limits (max_retries, timeout_s)."
    )
    return ServiceError(
        f"{what} failed{tries}{status}: {failure.message}",
        fix,
        status=failure.status,
        retryable=True,
    )
