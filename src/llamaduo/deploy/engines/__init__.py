"""Serving engines: transformers (model folders), llama.cpp (GGUF files); `load_engine` picks one."""

from __future__ import annotations

from pathlib import Path

from llamaduo.deploy.engines.base import Engine, EngineError, GenParams
from llamaduo.errors import LlamaduoError

__all__ = ["Engine", "EngineError", "GenParams", "load_engine", "pick_engine"]


def pick_engine(path: Path, engine: str) -> str:
    """`auto` means llama.cpp for a .gguf file and transformers for a folder."""
    if engine != "auto":
        return engine
    return "llamacpp" if path.suffix == ".gguf" else "transformers"


def load_engine(path: str | Path, engine: str = "auto", *, context_length: int | None = None, threads: int | None = None,
                model_id: str | None = None) -> Engine:
    path = Path(path)
    if not path.exists():
        raise LlamaduoError(f"model path {path} does not exist", "Pass a run's merged/ folder, an exported .gguf file, or a run id.")
    kind = pick_engine(path, engine)
    if kind == "transformers":
        from llamaduo.deploy.engines.hf import TransformersEngine

        return TransformersEngine(path, context_length=context_length, model_id=model_id)
    if kind == "llamacpp":
        from llamaduo.deploy.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(path, context_length=context_length, threads=threads, model_id=model_id)
    raise LlamaduoError(f"engine {kind!r} does not load in-process", "Use --engine transformers, llamacpp or vllm.")
