"""Translate the exceptions of the `openai` and `anthropic` SDKs (same generator, same shapes) into ProviderFailure."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from llamaduo.service.errors import ProviderFailure
from llamaduo.service.retry import kind_of_status, parse_retry_after


def translate(exc: BaseException, sdk: Any) -> ProviderFailure:
    """`sdk` is the imported module (openai or anthropic); anything unknown is re-raised by the caller."""
    if _refused(exc):
        return ProviderFailure("unreachable", "could not connect to the server")
    if isinstance(exc, sdk.APITimeoutError):
        return ProviderFailure("timeout", "the request timed out")
    if isinstance(exc, sdk.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f" ({type(cause).__name__})" if cause else ""
        return ProviderFailure("connection", f"the connection failed{detail}")
    if isinstance(exc, sdk.APIStatusError):
        status = exc.status_code
        return ProviderFailure(
            kind_of_status(status),
            short_error_text(exc.body, exc.message),
            status=status,
            retry_after=parse_retry_after(dict(exc.response.headers)),
        )
    if isinstance(exc, sdk.APIResponseValidationError | json.JSONDecodeError | UnicodeDecodeError):
        return ProviderFailure("server", "the server sent a reply that is not valid JSON")
    return transport_failure(exc)


def transport_failure(exc: BaseException) -> ProviderFailure:
    """Errors raised below the SDK (while reading a body): timeouts, dropped or truncated connections."""
    from llamaduo.service.providers.openai_provider import http_module

    http = http_module()
    if _refused(exc):
        return ProviderFailure("unreachable", "could not connect to the server")
    if isinstance(exc, http.TimeoutException | asyncio.TimeoutError):
        return ProviderFailure("timeout", "the request timed out")
    if isinstance(exc, http.TransportError | ConnectionError):
        return ProviderFailure("connection", f"the connection failed ({type(exc).__name__})")
    try:
        import aiohttp
    except ImportError:
        raise exc from None
    if isinstance(exc, aiohttp.ClientError):
        return ProviderFailure("connection", f"the connection failed ({type(exc).__name__})")
    raise exc


def short_error_text(body: Any, fallback: str) -> str:
    """The provider's own error message (one line, 200 chars at most)."""
    message = None
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
    text = str(message or fallback).replace("\n", " ").strip()
    return text[:200]


def _refused(exc: BaseException) -> bool:
    """A connection that could not even be opened (refused, unknown host), anywhere in the cause chain."""
    from llamaduo.service.providers.openai_provider import http_module

    connect_errors: tuple[type[BaseException], ...] = (http_module().ConnectError,)
    try:
        import aiohttp

        connect_errors += (aiohttp.ClientConnectorError,)
    except ImportError:
        pass
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return False
        if isinstance(seen, connect_errors) and not isinstance(seen, TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
