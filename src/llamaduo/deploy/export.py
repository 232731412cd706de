"""`llamaduo export RUN --format safetensors|gguf|ollama`: write the artifact, run the parity check, write the model card.

Artifacts land in `runs/<run>/exports/<format>[-<quantization>]/`, built in a temp folder and renamed into place,
so a killed export never leaves a half-written one. A failed parity check keeps the artifact (for inspection) but
marks it failed in `parity.json` and raises.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from llamaduo.artifacts import resolve_artifact
from llamaduo.atomic import atomic_write_json, atomic_write_text
from llamaduo.deploy.parity import ParityReport, check_parity
from llamaduo.errors import LlamaduoError, MissingExtra
from llamaduo.runs import MANIFEST, RunFolder, file_sha256

Format = Literal["safetensors", "gguf", "ollama"]
FORMATS = ("safetensors", "gguf", "ollama")
QUANTS = ("f16", "q8_0", "q4_k_m")
FALLBACK_PROMPTS = [
    "Summarize in one sentence: The city council voted to extend library hours on weekends starting next month.",
    "Classify the sentiment of this review as positive or negative: The battery died after two days.",
    "What is the capital of France?",
    "Write a Python function that returns the square of a number.",
    "Give two tips for writing clear emails.",
    "Answer from the context. Context: Mount Everest is 8,849 metres tall. Question: How tall is Mount Everest?",
    "Translate to French: good morning.",
    "List three primary colours.",
]


class ExportResult(BaseModel):
    run_id: str
    format: str
    quantization: str | None = None
    folder: str
    files: dict[str, str] = Field(default_factory=dict)
    """File name -> sha256."""
    prompts_source: str = ""
    parity: ParityReport


def find_merged(config: Any, run: str) -> tuple[Path, RunFolder | None, Path]:
    """Where the exports go (the run folder, or a non-best iteration's folder), the run's RunFolder when it has a
    manifest, and the model to export: `run` is any name `resolve_artifact` accepts (a loop run means its best iteration)."""
    found = resolve_artifact(run, config, prefer="merged", fetch=False)
    if found.from_hub:
        raise LlamaduoError(f"no run {run} in {config.path(config.project.runs_dir)}", "Pass a run id from `llamaduo runs list`, or a model folder.")
    found.require("merged", "base", purpose="export")
    assert found.path is not None and found.home is not None  # a model folder found on disk has both
    root = found.run_root
    folder = RunFolder(root) if root is not None and (root / MANIFEST).is_file() else None
    return found.home, folder, found.path


def test_prompts(config: Any, limit: int) -> tuple[list[list[dict[str, str]]], str]:
    """The first `limit` prompts of the frozen test split, else a fixed built-in set (named in the report)."""
    try:
        from llamaduo.data.store import DatasetStore

        examples = DatasetStore(config.path(config.data.store)).examples("test")
    except Exception:  # no store, no test split yet: parity still runs on the built-in prompts
        examples = []
    if examples:
        return [[m.model_dump() for m in e.prompt] for e in examples[:limit]], "test split"
    return [[{"role": "user", "content": p}] for p in FALLBACK_PROMPTS[:limit]], "built-in prompts"


def export_run(config: Any, run: str, fmt: str, quantization: str | None = None, *, announce=print) -> ExportResult:
    if fmt not in FORMATS:
        raise LlamaduoError(f"unknown export format {fmt!r}", f"Use one of: {', '.join(FORMATS)}.")
    settings = config.deploy.export
    quant = None if fmt == "safetensors" else (quantization or settings.quantization)
    if quant is not None and quant not in QUANTS:
        raise LlamaduoError(f"unknown quantization {quant!r}", f"Use one of: {', '.join(QUANTS)}.")
    run_root, run_folder, merged = find_merged(config, run)
    if fmt != "safetensors":
        from llamaduo.deploy.converter import find_converter

        find_converter(settings.converter)  # fail before any work when the converter is missing
        if importlib.util.find_spec("llama_cpp") is None:  # the parity check runs the GGUF with llama.cpp
            raise MissingExtra("llama_cpp", "llamacpp")
    target = run_root / "exports" / (fmt if quant is None else f"{fmt}-{quant}")
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=_mkdir(target.parent)))
    try:
        announce(f"exporting {merged} as {fmt}{'' if quant is None else ' ' + quant} ...")
        if fmt == "safetensors":
            _copy_model(merged, staging)
        elif not _reuse_gguf(run_root / "exports" / f"gguf-{quant}", staging / f"model-{quant}.gguf", merged):
            _write_gguf(merged, staging / f"model-{quant}.gguf", quant, settings.converter)
        prompts, source = test_prompts(config, settings.parity_prompts)
        announce(f"parity check on {len(prompts)} {source} ...")
        tolerance = settings.parity_tolerance.get(quant or fmt, 0.5)
        parity = _parity(merged, staging, fmt, quant, prompts, tolerance, settings, config)
        files = {p.name: file_sha256(p) for p in sorted(staging.iterdir()) if p.is_file()}
        result = ExportResult(run_id=run_folder.run_id if run_folder else run_root.name, format=fmt, quantization=quant, folder=str(target), files=files,
                              prompts_source=source, parity=parity)
        from llamaduo.deploy.modelcard import model_card

        atomic_write_json(staging / "parity.json", parity.model_dump(mode="json"))
        atomic_write_text(staging / "README.md", model_card(config, run_folder.root if run_folder else run_root, merged, result))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    if run_folder is not None:
        run_folder.event("export", format=fmt, quantization=quant, folder=str(target), parity_passed=parity.passed, cause=parity.cause)
    if not parity.passed:
        raise LlamaduoError(f"parity check failed for {target.name}: {parity.cause}", f"See {target / 'parity.json'}; the export is kept for inspection")
    return result


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _reuse_gguf(gguf_export: Path, out: Path, merged: Path) -> bool:
    """An Ollama export reuses the GGUF of a passed gguf export of the same quantization, if newer than the checkpoint."""
    source = gguf_export / out.name
    parity = gguf_export / "parity.json"
    if not (source.is_file() and parity.is_file()):
        return False
    newest_weight = max((p.stat().st_mtime for p in merged.glob("*.safetensors")), default=float("inf"))
    if source.stat().st_mtime < newest_weight or '"passed": true' not in parity.read_text(encoding="utf-8"):
        return False
    try:
        os.link(source, out)
    except OSError:
        shutil.copy2(source, out)
    return True


def _copy_model(merged: Path, out: Path) -> None:
    for item in merged.iterdir():
        if item.is_file() and not item.name.startswith("."):
            shutil.copy2(item, out / item.name)


def _write_gguf(merged: Path, out: Path, quant: str, converter_setting: str | None) -> None:
    from llamaduo.deploy.converter import find_converter

    converter = find_converter(converter_setting)
    outtype = "q8_0" if quant == "q8_0" else "f16"
    raw = out if quant != "q4_k_m" else out.with_name("model-f16.tmp.gguf")
    cmd = [sys.executable, str(converter), str(merged), "--outfile", str(raw), "--outtype", outtype]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode or not raw.is_file():
        last = next((line for line in reversed(done.stderr.strip().splitlines()) if line.strip()), "no output")
        raise LlamaduoError(f"llama.cpp's converter failed on {merged.name}: {last.strip()[:300]}", "The model architecture or tokenizer may be unsupported by this llama.cpp version")
    if quant == "q4_k_m":
        _quantize(raw, out, "q4_k_m")
        raw.unlink()


def _quantize(source: Path, out: Path, quant: str) -> None:
    try:
        import llama_cpp
    except ImportError:
        raise LlamaduoError("q4_k_m needs llama.cpp's quantizer from llama-cpp-python", "Install it with `pip install 'llamaduo[llamacpp]'`, or export f16/q8_0.") from None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = os.cpu_count() or 1
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), params)
    if status != 0 or not out.is_file():
        raise LlamaduoError(f"llama.cpp could not quantize {source.name} to {quant} (status {status})", "Try --quantization q8_0.")


def _parity(merged: Path, staging: Path, fmt: str, quant: str | None, prompts, tolerance: float, settings, config) -> ParityReport:
    # The checkpoint runs through the engine, dtype and decoding the loop's inference used for the judged answers.
    from llamaduo.infer.engines import EngineSpec
    from llamaduo.infer.engines.hf import TransformersEngine

    precision = config.infer.precision
    checkpoint = TransformersEngine(EngineSpec(kind="transformers", model=str(merged), precision=precision))
    stop_texts = [checkpoint.tokenizer.convert_ids_to_tokens(i) for i in checkpoint.eos_ids]
    kwargs: dict[str, Any] = dict(fmt=fmt, quantization=quant, tolerance=tolerance, max_tokens=settings.parity_max_tokens)
    if fmt == "safetensors":
        exported = TransformersEngine(EngineSpec(kind="transformers", model=str(staging), precision=precision))
        missing = [t for t, i in zip(stop_texts, checkpoint.eos_ids) if i not in exported.eos_ids]
        return check_parity(checkpoint, exported, prompts, missing_stops=missing, **kwargs)
    from llamaduo.infer.engines.llamacpp import LlamaCppEngine

    gguf = staging / f"model-{quant}.gguf"
    exported = LlamaCppEngine(EngineSpec(kind="llamacpp", model=str(gguf), context_length=min(checkpoint.context_length, 4096)))
    try:
        return _gguf_parity(checkpoint, exported, gguf, staging, fmt, prompts, stop_texts, kwargs, config)
    finally:
        exported.close()


def _gguf_parity(checkpoint, exported, gguf: Path, staging: Path, fmt: str, prompts, stop_texts, kwargs, config) -> ParityReport:
    missing = [t for t, i in zip(stop_texts, checkpoint.eos_ids) if not exported.is_end_of_generation(i)]
    if fmt == "gguf":
        return check_parity(checkpoint, exported, prompts, missing_stops=missing, **kwargs)
    from llamaduo.deploy.ollama import modelfile, reduce_template

    special = {"bos_token": checkpoint.tokenizer.bos_token or "", "eos_token": checkpoint.tokenizer.eos_token or ""}
    spec = reduce_template(checkpoint.chat_template or "", special)
    params = {"temperature": config.infer.temperature, "top_p": config.infer.top_p,
              "num_ctx": min(checkpoint.context_length, config.train.max_seq_len), "num_predict": config.infer.max_new_tokens}
    bos = special["bos_token"] if spec.leading.startswith(special["bos_token"] or "\0") else ""
    atomic_write_text(staging / "Modelfile", modelfile(gguf.name, spec, stop_texts, params, bos_text=bos))
    # The Modelfile stops on the checkpoint's own end-of-turn tokens, so Ollama ends answers where the checkpoint does.
    return check_parity(checkpoint, exported, prompts, missing_stops=missing, render_export=spec.render, **kwargs)
