"""The service-LLM layer: one async client per role, with a persistent cache, limits, retries, cost and budget."""

from llamaduo.service.client import ServiceClient, open_service, run_sync
from llamaduo.service.errors import ServiceError, StructuredOutputError
from llamaduo.service.scores import parse_score
from llamaduo.service.types import ChatRequest, ChatResult, Usage

__all__ = [
    "ChatRequest",
    "ChatResult",
    "ServiceClient",
    "ServiceError",
    "StructuredOutputError",
    "Usage",
    "open_service",
    "parse_score",
    "run_sync",
]
