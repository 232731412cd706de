"""Config of deployment: the OpenAI-compatible server, the gateway in front of the app, and model export."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llamaduo.configbase import Section
from llamaduo.deploy.migration_config import CanaryConfig, LiveEvalConfig, PolicyConfig


class ServeConfig(Section):
    """`llamaduo serve`: an OpenAI-compatible HTTP server over a local model."""

    engine: Literal["auto", "transformers", "llamacpp", "vllm"] = "auto"
    """auto picks llamacpp for a .gguf file and transformers for a model folder; vllm launches `vllm serve`."""
    host: str = "127.0.0.1"
    """Interface to listen on (0.0.0.0 exposes the server to the network)."""
    port: int = Field(8000, ge=0, le=65535)
    """TCP port (0 picks a free one and prints it)."""
    model_name: str | None = None
    """The id clients send as `model` (none: the model folder or file name)."""
    api_keys_env: str = "LLAMADUO_SERVE_KEYS"
    """Environment variable with comma-separated bearer tokens; when it (or `api_keys_file`) yields keys, requests need one."""
    api_keys_file: str | None = None
    """A file with one accepted bearer token per line."""
    max_tokens: int = Field(512, ge=1)
    """Longest completion a request may ask for; the default when a request gives none."""
    max_body_bytes: int = Field(1_000_000, ge=1024)
    """Requests with a larger body get HTTP 413."""
    concurrency: int = Field(1, ge=1, le=256)
    """Generations running at once; further requests wait in the queue."""
    queue_size: int = Field(64, ge=0)
    """Requests that may wait for a slot; past it the server answers 429 at once."""
    timeout_s: float = Field(120.0, gt=0)
    """Longest time one request may wait plus generate before it gets 504."""
    context_length: int | None = Field(None, ge=16)
    """Context window in tokens (none: the model's own; llama.cpp allocates this many)."""
    threads: int | None = Field(None, ge=1)
    """CPU threads for llama.cpp (none: its default)."""
    vllm_args: list[str] = Field(default_factory=list)
    """Extra arguments appended to `vllm serve` for engine vllm."""
    isolation: Literal["process", "none"] = "process"
    """process runs the engine in a worker process that is restarted if it crashes or hangs (requests in flight get
    503); none loads it into the server process (slightly less overhead, but a native crash ends the server)."""
    hang_timeout_s: float = Field(120.0, gt=0)
    """A worker that produces nothing for this long while requests wait on it is killed and restarted."""


class UpstreamConfig(Section):
    """One OpenAI-compatible endpoint the gateway forwards to."""

    base_url: str = "https://api.openai.com/v1"
    """Base URL including /v1."""
    model: str | None = None
    """Model id to send upstream (none: pass the client's `model` through). In gateway.local, a run id, RUN:iter-K or model path is sent as the id `llamaduo serve` gives that model."""
    api_key_env: str | None = "OPENAI_API_KEY"
    """Environment variable holding the upstream key (none: no key is sent)."""
    timeout_s: float = Field(60.0, gt=0)
    """Seconds before an upstream request counts as failed."""


class GatewayConfig(Section):
    """`llamaduo gateway`: a drop-in OpenAI endpoint for the application that logs, compares or migrates traffic."""

    mode: Literal["capture", "shadow", "canary", "local"] = "capture"
    """capture: answer from the service and log; shadow: also ask the local model and log both; canary: answer `canary.share` of requests locally; local: answer locally, fall back to the service. With `policy.enabled` this is the starting mode and the capture store holds the current one."""
    host: str = "127.0.0.1"
    """Interface to listen on."""
    port: int = Field(8100, ge=0, le=65535)
    """TCP port (0 picks a free one and prints it)."""
    service: UpstreamConfig = Field(default_factory=UpstreamConfig)
    """The paid service LLM."""
    local: UpstreamConfig = Field(
        default_factory=lambda: UpstreamConfig(base_url="http://127.0.0.1:8000/v1", api_key_env=None, timeout_s=30.0)
    )
    """The local model, usually a `llamaduo serve` instance."""
    store_url: str = "sqlite:///.llamaduo/capture.sqlite"
    """SQLAlchemy URL of the capture store; relative SQLite paths resolve against the project folder. Use postgresql+psycopg://... for several replicas."""
    client_keys_env: str = "LLAMADUO_GATEWAY_KEYS"
    """Environment variable with comma-separated client tokens, each optionally `name:token`; when set, clients must send one."""
    client_keys_file: str | None = None
    """A file with one `name:token` (or bare token) per line."""
    redact_pii: bool = False
    """Replace emails, phone numbers and API keys in prompts and answers before anything is written."""
    max_body_bytes: int = Field(1_000_000, ge=1024)
    """Requests with a larger body get HTTP 413."""
    live_eval: LiveEvalConfig = Field(default_factory=LiveEvalConfig)
    """Judging a share of live pairs in the background (docs/deploy.md#the-migration-loop)."""
    canary: CanaryConfig = Field(default_factory=CanaryConfig)
    """The share of requests canary mode answers locally."""
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    """Automatic promotion (shadow -> canary -> local) and rollback."""


class ExportConfig(Section):
    """`llamaduo export`: the artifacts written for a trained run and the parity check run after each."""

    quantization: Literal["f16", "q8_0", "q4_k_m"] = "q8_0"
    """GGUF (and Ollama) weight type."""
    converter: str | None = None
    """Path of llama.cpp's convert_hf_to_gguf.py (none: search the installed llama-cpp-python, $LLAMA_CPP_DIR and PATH)."""
    parity_prompts: int = Field(8, ge=1)
    """Test prompts answered greedily by both the export and the checkpoint."""
    parity_max_tokens: int = Field(48, ge=1)
    """Tokens generated per parity prompt."""
    parity_tolerance: dict[str, float] = Field(default_factory=lambda: {"f16": 0.9, "q8_0": 0.7, "q4_k_m": 0.5, "safetensors": 0.99})
    """Least mean token-F1 between export and checkpoint greedy answers, per format or quantization; below it the export fails. Greedy decoding turns one flipped near-tie token into a different answer, so small models need room: SmolLM2-135M measured f16 1.00, q8_0 0.73, q4_k_m 0.59 on 8 prompts."""
    temperature: float = Field(0.7, ge=0)
    """Default sampling temperature written into the Ollama Modelfile."""
    top_p: float = Field(0.95, gt=0, le=1)
    """Default nucleus sampling written into the Ollama Modelfile."""


class DeployConfig(Section):
    """Serving, gateway and export settings."""

    serve: ServeConfig = Field(default_factory=ServeConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
