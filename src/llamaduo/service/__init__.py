"""The service-LLM layer: one async client per role, with a persistent cache, limits, retries, cost and budget.

Exports resolve lazily: `llamaduo.config` imports `llamaduo.service.config`, and an eager import here
would load the client (asyncio, the providers) on every CLI start-up (`llamaduo --help`, `status`).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ChatRequest": "llamaduo.service.types",
    "ChatResult": "llamaduo.service.types",
    "ServiceClient": "llamaduo.service.client",
    "ServiceError": "llamaduo.service.errors",
    "StructuredOutputError": "llamaduo.service.errors",
    "Usage": "llamaduo.service.types",
    "open_service": "llamaduo.service.client",
    "parse_score": "llamaduo.service.scores",
    "run_sync": "llamaduo.service.client",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
