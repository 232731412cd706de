"""The contract every inference backend meets, and the registry that picks one by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from pydantic import BaseModel


class Generation(BaseModel):
    """One sampled answer."""

    text: str
    finish_reason: str
    """`stop` when the model ended its turn, `length` when it hit max_new_tokens."""
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Backend(Protocol):
    """Answers chats. `generate` returns K generations per prompt, in the prompts' order."""

    name: str
    fingerprint: str
    """Identity of the model that answers (the training fingerprint id, or a hash of its files)."""

    def render(self, messages: list[dict[str, str]]) -> str:
        """The exact prompt text the model sees ('' where a remote server applies the template)."""
        ...

    def generate(self, prompts: list[list[dict[str, str]]], samples: int) -> list[list[Generation]]: ...

    def close(self) -> None: ...


def sampling_params(infer: Any) -> dict[str, Any]:
    """K = 1 decodes greedily (reproducible); K > 1 samples with temperature and top_p."""
    if infer.samples == 1:
        return {"do_sample": False, "max_new_tokens": infer.max_new_tokens}
    return {"do_sample": True, "temperature": infer.temperature, "top_p": infer.top_p, "max_new_tokens": infer.max_new_tokens, "seed": infer.seed}


def open_backend(name: str, config: Any, model: str) -> Backend:
    return BACKENDS[name](config, model)


def _transformers(config: Any, model: str) -> Backend:
    from llamaduo.infer.hf import TransformersBackend

    return TransformersBackend(config, model)


def _llamacpp(config: Any, model: str) -> Backend:
    from llamaduo.infer.llamacpp import LlamaCppBackend

    return LlamaCppBackend(config, model)


def _openai(config: Any, model: str) -> Backend:
    from llamaduo.infer.openai_compat import OpenAICompatBackend

    return OpenAICompatBackend(config, model)


BACKENDS: dict[str, Callable[[Any, str], Backend]] = {"transformers": _transformers, "llamacpp": _llamacpp, "openai": _openai}
