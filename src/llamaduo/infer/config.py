"""Config of local inference over the test split."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llamaduo.configbase import Section


class InferConfig(Section):
    """How the local model answers the test prompts."""

    backend: Literal["transformers", "llamacpp", "openai"] = "transformers"
    """transformers (batched), llama.cpp (GGUF) or any OpenAI-compatible endpoint."""
    model: str | None = None
    """Model folder, hub id, GGUF file, or served model name (none: the merged model of the latest training run)."""
    samples: int = Field(1, ge=1)
    """K answers per prompt (the paper used 4)."""
    temperature: float = Field(0.7, ge=0)
    """Sampling temperature when K > 1; K = 1 decodes greedily."""
    top_p: float = Field(0.95, gt=0, le=1)
    """Nucleus sampling when K > 1."""
    max_new_tokens: int = Field(256, ge=1)
    """Longest answer, in tokens."""
    batch_size: int = Field(16, ge=1)
    """Prompts generated together by the transformers backend (they are sorted by length first)."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """transformers backend: auto is bf16 on GPU and on CPUs with native bf16, else fp32."""
    endpoints: list[str] = Field(default_factory=list)
    """Base URLs for the openai backend (e.g. http://localhost:8000/v1); prompts are spread over them."""
    api_key_env: str | None = None
    """Environment variable holding the endpoint's API key, if it needs one."""
    concurrency: int = Field(16, ge=1)
    """Requests in flight per endpoint (openai backend)."""
    n_ctx: int = Field(4096, ge=256)
    """Context window of the llama.cpp backend."""
    threads: int | None = Field(None, ge=1)
    """CPU threads of the llama.cpp backend (none: all cores)."""
    seed: int = 0
    """Sampling seed."""
