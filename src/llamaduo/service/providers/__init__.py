"""The provider registry: the one place that says how a provider name becomes a client.

A provider is a factory `(ServiceModel, api_key) -> Provider` (see `base.Provider` for the contract).
The built-in ones register here exactly as a third-party one would, through `register_provider`.
"""

from __future__ import annotations

from collections.abc import Callable

from llamaduo.service.config import ServiceModel
from llamaduo.service.providers.base import BatchState, Provider, ProviderCall, ProviderReply

ProviderFactory = Callable[[ServiceModel, str], Provider]
_REGISTRY: dict[str, ProviderFactory] = {}


def register_provider(name: str, factory: ProviderFactory) -> None:
    _REGISTRY[name] = factory


def provider_names() -> list[str]:
    return sorted(_REGISTRY)


def make_provider(model: ServiceModel, api_key: str) -> Provider:
    from llamaduo.errors import ConfigError

    factory = _REGISTRY.get(model.provider)
    if factory is None:
        raise ConfigError(f"unknown service provider {model.provider!r}", f"Use one of: {', '.join(provider_names())}.")
    return factory(model, api_key)


def _openai(model: ServiceModel, api_key: str) -> Provider:
    from llamaduo.service.providers.openai_provider import OpenAIProvider

    return OpenAIProvider(model, api_key)


def _anthropic(model: ServiceModel, api_key: str) -> Provider:
    from llamaduo.service.providers.anthropic_provider import AnthropicProvider

    return AnthropicProvider(model, api_key)


def _gemini(model: ServiceModel, api_key: str) -> Provider:
    from llamaduo.service.providers.gemini_provider import GeminiProvider

    return GeminiProvider(model, api_key)


register_provider("openai", _openai)
register_provider("anthropic", _anthropic)
register_provider("gemini", _gemini)

__all__ = ["BatchState", "Provider", "ProviderCall", "ProviderReply", "make_provider", "provider_names", "register_provider"]
