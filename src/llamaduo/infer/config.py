"""Config of local inference over the test split."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llamaduo.configbase import Section


class InferConfig(Section):
    """How the local model answers the test prompts."""

    backend: Literal["transformers", "llamacpp", "openai"] = "transformers"
    """transformers (batched), llama.cpp (GGUF) or any OpenAI-compatible endpoint."""
    samples: int = Field(1, ge=1)
    """K answers per prompt (the paper used 4)."""
    temperature: float = Field(0.7, ge=0)
    """Sampling temperature when K > 1; K = 1 decodes greedily."""
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(256, ge=1)
    batch_size: int = Field(8, ge=1)
    endpoints: list[str] = Field(default_factory=list)
    """Base URLs for the openai backend; prompts are spread over them."""
    seed: int = 0
