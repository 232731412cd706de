"""`llamaduo serve` as a Python function: resolve the model, load an engine (or launch `vllm serve`) and listen."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from llamaduo.artifacts import Artifact, resolve_artifact
from llamaduo.deploy.config import ServeConfig
from llamaduo.deploy.keys import load_client_keys
from llamaduo.errors import LlamaduoError


def resolve_model(model: str | None, runs_dir: Path | None = None, engine: str = "auto", config: Any = None) -> Artifact:
    """What `llamaduo serve MODEL` serves (see docs/deploy.md, "Naming a model"): a run id serves the run's best model,
    its GGUF export for engine llamacpp; a path or hub id serves that model."""
    prefer = "gguf" if engine == "llamacpp" else "merged" if engine in ("transformers", "vllm") else None
    found = resolve_artifact(model, config, prefer=prefer, runs_dir=runs_dir)
    return found.require("merged", "base", "gguf", purpose="serve")


def vllm_command(model: Path, settings: ServeConfig, name: str) -> list[str]:
    """The `vllm serve` command line for these settings (keys travel in VLLM_API_KEY, not on the command line)."""
    exe = shutil.which("vllm")
    cmd = [exe] if exe else [sys.executable, "-m", "vllm.entrypoints.cli.main"]
    cmd += ["serve", str(model), "--host", settings.host, "--port", str(settings.port), "--served-model-name", name]
    if settings.context_length:
        cmd += ["--max-model-len", str(settings.context_length)]
    cmd += ["--max-num-seqs", str(settings.concurrency)]
    return cmd + list(settings.vllm_args)


def run_vllm(model: Path, settings: ServeConfig, name: str, keys: dict[str, str]) -> int:
    if importlib.util.find_spec("vllm") is None and shutil.which("vllm") is None:
        raise LlamaduoError("vLLM is not installed", "Install it with `pip install vllm` on a CUDA machine, or use --engine transformers or llamacpp.")
    from llamaduo.deploy.serving import bind_socket

    bind_socket(settings.host, settings.port).close()  # a taken port fails here, in one line
    env = dict(os.environ)
    if keys:
        env["VLLM_API_KEY"] = next(iter(keys))  # vLLM accepts a single key
    return subprocess.call(vllm_command(model, settings, name), env=env)


def serve(model: str | None, settings: ServeConfig, *, runs_dir: Path | None = None, announce=print, config: Any = None) -> int:
    """Serve until interrupted. Returns the process exit code. With the project `config`, the served model computes in
    its infer.precision (the dtype its judged answers were produced in) and a run's GGUF is its export quantization."""
    artifact = resolve_model(model, runs_dir, settings.engine, config)
    precision = config.infer.precision if config is not None else "auto"
    path = artifact.path
    keys = load_client_keys(settings.api_keys_env, settings.api_keys_file)
    from llamaduo.infer.engines import EngineSpec, open_engine, pick_engine

    kind = pick_engine(path, settings.engine)
    name = settings.model_name or artifact.served_name
    if kind == "vllm":
        return run_vllm(path, settings, name, keys)
    from llamaduo.deploy.server import create_app
    from llamaduo.deploy.serving import bind_socket, run_foreground

    if not path.exists():
        raise LlamaduoError(f"model path {path} does not exist", "Pass a run's merged/ folder, an exported .gguf file, or a run id.")
    spec = EngineSpec(kind=kind, model=str(path), model_id=name, context_length=settings.context_length, threads=settings.threads,
                      precision=precision)
    sock = bind_socket(settings.host, settings.port)
    engine = None
    try:
        if settings.isolation == "process":
            from llamaduo.infer.engines.worker import WorkerEngine

            engine = WorkerEngine(spec, hang_timeout_s=settings.hang_timeout_s)
        else:
            engine = open_engine(spec)
        app = create_app(engine, settings, keys)
        port = sock.getsockname()[1]
        auth = f", {len(keys)} API key(s) required" if keys else ""
        where = "in a worker process" if settings.isolation == "process" else "in-process"
        announce(f"serving {name} ({engine.name}, {where}) on http://{settings.host}:{port}/v1{auth}")
        announce(f"model: {artifact.describe()}")
        note = engine.describe().get("note")
        if note:
            announce(note)
        run_foreground(app, sock)
    finally:
        sock.close()
        if engine is not None:
            engine.close()
    return 0
