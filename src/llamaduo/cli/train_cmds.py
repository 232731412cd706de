"""`llamaduo train` and `llamaduo infer`: thin wrappers over `llamaduo.train.train` and `llamaduo.infer.infer`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from llamaduo.cli.common import ConfigOpt, JsonOpt, QuietOpt, SetOpt, get_config
from llamaduo.errors import LlamaduoError

ACCELERATE_CONFIGS = ("ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3")

DataOpt = Annotated[
    Path | None,
    typer.Option("--data", help="A JSONL file of examples (llamaduo Example rows) to use instead of the dataset store.", show_default=False),
]
RunOpt = Annotated[str | None, typer.Option("--run", help="Run id to write into (or resume) under the runs folder.", show_default=False)]


def train(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    data: DataOpt = None,
    run: RunOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint of --run (default: the newest unfinished training run).")] = False,
    output: Annotated[Path | None, typer.Option("--output", help="Write outputs here instead of <run>/train.", show_default=False)] = None,
    launch: Annotated[
        str | None,
        typer.Option("--launch", help="Scale out through `accelerate launch` with a shipped config (ddp, fsdp, deepspeed_zero2, deepspeed_zero3) or a config file.", show_default=False),
    ] = None,
    num_processes: Annotated[int | None, typer.Option("--num-processes", help="Processes (GPUs) for --launch; default: the config's.", show_default=False)] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fine-tune the local model (LoRA, QLoRA or full) on the train split; writes adapter/, merged/ and fingerprint.json."""
    from llamaduo.runs import RunFolder, new_run_id

    cfg = get_config(config, set_)
    runs_dir = cfg.path(cfg.project.runs_dir)
    if resume and run is None:
        run = _unfinished_training(runs_dir)
    if launch:
        if run is None:
            run = RunFolder.create(runs_dir, cfg, run_id=new_run_id(f"{cfg.project.name}-train")).run_id
        raise typer.Exit(_launch(launch, num_processes, run))
    if quiet:
        os.environ["LLAMADUO_QUIET"] = "1"
    from llamaduo.train import train as run_training

    folder = None
    if run is not None:
        folder = RunFolder.open(runs_dir, run) if (runs_dir / run / "manifest.json").is_file() else None
        if folder is None and int(os.environ.get("RANK", "0")) == 0:
            folder = RunFolder.create(runs_dir, cfg, run_id=run)
        folder = folder or RunFolder(runs_dir / run)
    examples = read_examples(data) if data else None
    result = run_training(cfg, examples=examples, run=folder, resume=resume, output_dir=output)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    m = result.metrics
    typer.echo(
        f"trained {result.fingerprint.get('base_model')} ({result.fingerprint.get('method')}) in run {result.run_id}: "
        f"loss {m.get('train_loss', float('nan')):.4f}, {m.get('train_runtime', 0):.0f}s, peak {m.get('peak_memory_mb', 0):.0f} MiB\n"
        f"merged model: {result.merged_dir}\nadapter: {result.adapter_dir}"
    )


def infer(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: Annotated[str | None, typer.Option("--model", help="Model folder, hub id, GGUF file or served model name (default: the project's newest trained model: a train run's merged model or a loop run's best iteration).", show_default=False)] = None,
    backend: Annotated[str | None, typer.Option("--backend", help="transformers, llamacpp or openai (default: infer.backend).", show_default=False)] = None,
    samples: Annotated[int | None, typer.Option("--samples", "-k", help="Answers per prompt (default: infer.samples).", show_default=False)] = None,
    data: DataOpt = None,
    run: RunOpt = None,
    output: Annotated[Path | None, typer.Option("--output", help="Answers JSONL path (default: <run>/answers.jsonl).", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer the test split with the local model (K samples per prompt); writes Answer rows as JSONL."""
    from llamaduo.infer import infer as run_infer
    from llamaduo.infer.engines import ENGINES as BACKENDS
    from llamaduo.runs import RunFolder

    overrides = list(set_ or [])
    if samples is not None:
        overrides.append(f"infer.samples={samples}")
    cfg = get_config(config, overrides)
    if backend is not None and backend not in BACKENDS:
        raise LlamaduoError(f"unknown backend {backend!r}", f"Use one of: {', '.join(BACKENDS)}.")
    runs_dir = cfg.path(cfg.project.runs_dir)
    folder = None
    if run is not None:
        folder = RunFolder.open(runs_dir, run) if (runs_dir / run / "manifest.json").is_file() else RunFolder.create(runs_dir, cfg, run_id=run)
    examples = read_examples(data) if data else None
    result = run_infer(cfg, model, examples=examples, backend=backend, run=folder, output=output)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    typer.echo(
        f"{result.answers} answers ({result.backend}, {result.tokens_per_s:.1f} tokens/s, peak {result.peak_memory_mb:.0f} MiB) "
        f"-> {result.answers_path}"
    )


def read_examples(path: Path) -> list:
    """Examples from a JSONL file of llamaduo Example rows (a row without an id gets its content id)."""
    from pydantic import ValidationError

    from llamaduo.records import Example

    if not path.is_file():
        raise LlamaduoError(f"data file {path} not found", "Check the path given to --data.")
    examples = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            row.setdefault("task", "default")
            row.setdefault("id", Example.content_id(row["task"], row.get("messages", [])))
            examples.append(Example.model_validate(row))
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            raise LlamaduoError(f"{path} line {n} is not an example with messages ({type(exc).__name__})", "Each line needs {\"messages\": [{\"role\", \"content\"}...]}.") from None
    return examples


def accelerate_config(name: str) -> Path:
    """A shipped accelerate config by name, or a user's config file."""
    if name in ACCELERATE_CONFIGS:
        return Path(__file__).resolve().parents[1] / "train" / "accelerate" / f"{name}.yaml"
    path = Path(name)
    if not path.is_file():
        raise LlamaduoError(f"accelerate config {name} not found", f"Use one of {', '.join(ACCELERATE_CONFIGS)} or a path to an accelerate YAML file.")
    return path


def _launch(name: str, num_processes: int | None, run: str) -> int:
    """Re-run this same command under `accelerate launch`, every process writing into one run."""
    from llamaduo.train.device import cuda_available

    argv = _strip_launch(sys.argv[1:])
    if "--run" not in argv:
        argv += ["--run", run]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config(name))]
    if num_processes:
        cmd += ["--num_processes", str(num_processes)]
    if not cuda_available():
        # accelerate's multi-GPU launcher is torchrun; on a CPU-only machine the processes join a gloo group instead.
        cmd += ["--multi_gpu", "--mixed_precision", "no"] if name == "ddp" else []
    cmd += ["-m", "llamaduo.train", *argv]
    return subprocess.call(cmd)


def _strip_launch(args: list[str]) -> list[str]:
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in ("--launch", "--num-processes"):
            skip = True
            continue
        if arg.startswith(("--launch=", "--num-processes=")) or arg == "train":
            continue
        out.append(arg)
    return out


def _unfinished_training(runs_dir: Path) -> str:
    candidates = [p.parent.parent for p in runs_dir.glob("*/train/checkpoints") if not (p.parent / "fingerprint.json").is_file()]
    if not candidates:
        raise LlamaduoError(f"--resume found no interrupted training run in {runs_dir}", "Start training without --resume.")
    return max(candidates, key=lambda p: p.stat().st_mtime).name
