"""The engine layer: one registry of local-inference engines, used by infer, serve, export parity and the demo.

`transformers` runs model folders (batched), `llamacpp` runs GGUF files, `openai` reaches any OpenAI-compatible
server (vLLM, SGLang, Ollama, llama-server, another `llamaduo serve`). `open_engine` builds one from an `EngineSpec`;
`serve` runs the same engine inside a worker process (engines/worker.py) so a native crash cannot take it down.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from llamaduo.errors import LlamaduoError
from llamaduo.infer.engines.base import Engine, EngineCrashed, EngineError, GenParams, Generation

__all__ = [
    "ENGINES", "Engine", "EngineCrashed", "EngineError", "EngineSpec", "GenParams", "Generation", "open_engine", "pick_engine",
]


class EngineSpec(BaseModel):
    """Everything needed to build an engine, in a form that crosses a process boundary (the serve worker)."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    """A registry name (transformers, llamacpp, openai) or `module:Class` for an engine of your own."""
    model: str
    """A model folder, a .gguf file, or (openai) the served model name."""
    model_id: str | None = None
    """The name clients and records see (default: from the path)."""
    context_length: int | None = None
    threads: int | None = None
    """CPU threads of llama.cpp (none: all cores)."""
    precision: str = "auto"
    """transformers: auto (bf16 where native), bf16 or fp32."""
    batch_size: int = 16
    """transformers: prompts generated together by generate_batch."""
    seed: int = 0
    options: dict[str, Any] = {}
    """Engine-specific settings (openai: endpoints, api_key_env, concurrency)."""


def pick_engine(path: Path, engine: str) -> str:
    """`auto` means llama.cpp for a .gguf file (or a folder of one) and transformers for a model folder."""
    if engine != "auto":
        return engine
    if path.suffix == ".gguf" or (path.is_dir() and not (path / "config.json").is_file() and any(path.glob("*.gguf"))):
        return "llamacpp"
    return "transformers"


def _transformers(spec: EngineSpec, config: Any) -> Engine:
    from llamaduo.infer.engines.hf import TransformersEngine

    return TransformersEngine(spec)


def _llamacpp(spec: EngineSpec, config: Any) -> Engine:
    from llamaduo.infer.engines.llamacpp import LlamaCppEngine

    return LlamaCppEngine(spec)


def _openai(spec: EngineSpec, config: Any) -> Engine:
    from llamaduo.infer.engines.openai_compat import OpenAICompatEngine

    return OpenAICompatEngine(spec, config)


ENGINES: dict[str, Callable[[EngineSpec, Any], Engine]] = {"transformers": _transformers, "llamacpp": _llamacpp, "openai": _openai}


def open_engine(spec: EngineSpec, config: Any = None) -> Engine:
    """Build the engine `spec` names. `config` (the project config) is needed only by the openai engine."""
    factory = ENGINES.get(spec.kind)
    if factory is not None:
        return factory(spec, config)
    if ":" in spec.kind:
        module, _, name = spec.kind.partition(":")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise LlamaduoError(f"engine {spec.kind} cannot be imported: {exc}", "Name an importable module:Class.") from None
        return cls(spec)
    raise LlamaduoError(f"unknown engine {spec.kind!r}", f"Use one of {', '.join(ENGINES)} (or module:Class).")
