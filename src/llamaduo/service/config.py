"""Config of the service LLMs: one model per role (generator, judges), limits, prices and budget."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from llamaduo.configbase import Section

ProviderName = Literal["openai", "anthropic", "gemini"]


class Limits(Section):
    """How hard llamaduo may push one provider/model."""

    concurrency: int = Field(16, ge=1, le=1024)
    """Requests in flight at once."""
    rpm: int | None = Field(None, ge=1)
    """Requests per minute (none: unlimited)."""
    tpm: int | None = Field(None, ge=1)
    """Tokens per minute, input plus output (none: unlimited)."""
    timeout_s: float = Field(60.0, gt=0)
    """Seconds before one request is abandoned and retried."""
    max_retries: int = Field(6, ge=0, le=50)
    """Retries on 429, 5xx, timeouts and dropped connections before the call fails."""
    backoff_base_s: float = Field(0.5, gt=0)
    """First backoff; it doubles each retry, with jitter, capped by `backoff_max_s`."""
    backoff_max_s: float = Field(30.0, gt=0)
    """Longest wait between two retries (a larger Retry-After is still honoured)."""


class GenParams(Section):
    """Sampling parameters sent with every request of this role."""

    temperature: float | None = Field(None, ge=0, le=2)
    """Sampling temperature (none: the provider's default)."""
    top_p: float | None = Field(None, gt=0, le=1)
    """Nucleus sampling (none: the provider's default)."""
    max_tokens: int = Field(1024, ge=1)
    """Longest reply, in tokens."""
    seed: int | None = None
    """Provider-side sampling seed, where supported."""


class ServiceModel(Section):
    """One service LLM for one role."""

    provider: ProviderName = "openai"
    """`openai` (also any OpenAI-compatible server through `base_url`: vLLM, SGLang, Ollama, llama.cpp, TGI, OpenRouter, Together, Gemini's endpoint), `anthropic` or `gemini`."""
    model: str = "gpt-4o-mini"
    """The provider's model id."""
    base_url: str | None = None
    """Endpoint of an OpenAI-compatible server, e.g. http://localhost:11434/v1 for Ollama."""
    api_key_env: str | None = None
    """Environment variable holding the API key (default: OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY). Keys are never read from the config itself."""
    api_key_file: str | None = None
    """A file holding the key, as an alternative to the environment."""
    mode: Literal["online", "batch"] = "online"
    """`batch` sends requests through the provider's batch API (OpenAI Batch, Anthropic Message Batches) at about half price; slower, resumable."""
    batch_poll_s: float = Field(30.0, gt=0)
    """Seconds between two status checks of a batch job (`mode: batch`)."""
    supports_n: bool | None = None
    """Whether the server honours `n` (several samples in one request). None: true for OpenAI, false otherwise."""
    free: bool = False
    """Its calls cost nothing (a model you host yourself): counted at $0 with no price, even under `budget_usd`. A model that is neither priced nor free is refused when a budget is set, since its spend could not be counted."""
    limits: Limits = Field(default_factory=Limits)
    params: GenParams = Field(default_factory=GenParams)

    @property
    def key_env(self) -> str:
        if self.api_key_env:
            return self.api_key_env
        return {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY"}[self.provider]


class Price(Section):
    """USD per million tokens."""

    input: float = Field(ge=0)
    cached_input: float | None = Field(None, ge=0)
    """Price of input tokens served from the provider's prompt cache (none: same as input)."""
    output: float = Field(ge=0)
    batch_discount: float = Field(0.5, ge=0, le=1)
    """Multiplier applied in batch mode."""


class ServiceConfig(Section):
    """The paid service LLMs and the guard rails around them."""

    generator: ServiceModel = Field(default_factory=ServiceModel)
    """Writes synthetic training pairs."""
    judge: list[ServiceModel] = Field(default_factory=lambda: [ServiceModel()])
    """Scores the local model's answers; several judges form an ensemble."""
    budget_usd: float | None = Field(None, gt=0)
    """Spend cap for a project; a stage stops cleanly before the request that would cross it."""
    cache_path: str = ".llamaduo/cache.sqlite"
    """The persistent response cache (SQLite, WAL), relative to the project folder."""
    cache: bool = True
    """Reuse cached replies; identical inputs then cost nothing."""
    prices: dict[str, Price] = Field(default_factory=dict)
    """Per-model price overrides, keyed by model id, on top of the shipped price table."""

    @field_validator("judge", mode="before")
    @classmethod
    def _one_judge_is_a_list(cls, value: object) -> object:
        return [value] if isinstance(value, dict) else value
