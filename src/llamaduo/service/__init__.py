"""The service-LLM layer: one async client per role, with a persistent cache, limits, retries, cost and budget.

Exports resolve lazily: `llamaduo.config` imports `llamaduo.service.config`, and an eager import here
would load the client (asyncio, the providers) on every CLI start-up (`llamaduo --help`, `status`).
"""

from __future__ import annotations

from llamaduo.lazy_exports import lazy_getattr

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


__getattr__ = lazy_getattr(__name__, _EXPORTS)
