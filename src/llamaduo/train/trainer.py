"""`train(config)`: supervised fine-tuning of the local model with TRL's SFTTrainer and PEFT.

Each process of an `accelerate launch` runs this same function; the main process owns the run folder and outputs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from llamaduo import __version__
from llamaduo.artifacts import resolve_artifact
from llamaduo.errors import LlamaduoError
from llamaduo.records import Example
from llamaduo.runs import RunFolder, new_run_id
from llamaduo.train.dataset import conversations, fit_length, lora_rank
from llamaduo.train.device import DeviceSettings, apply_device_settings, apply_model_tuning, device_settings, peak_memory_mb
from llamaduo.train.outputs import FINGERPRINT, config_hash, last_checkpoint, model_hash, save_merged, save_model_folder, write_fingerprint

TRAIN_DIR = "train"



class TrainResult(BaseModel):
    """Where a training run put its outputs, what it was trained from, and how it went."""

    run_id: str | None = None
    output_dir: str
    adapter_dir: str | None = None
    """LoRA/QLoRA adapter (PEFT format); none after full fine-tuning."""
    merged_dir: str | None = None
    """Standalone model (safetensors + tokenizer + chat template) that inference, export and serving load."""
    fingerprint: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    resumed_from: str | None = None


def train(
    config: Any,
    examples: Sequence[Example] | None = None,
    run: RunFolder | None = None,
    resume: bool = False,
    output_dir: str | os.PathLike[str] | None = None,
) -> TrainResult:
    """Fine-tune `config.train.base_model` on `examples` (default: the store's train split)."""
    tc = config.train
    settings = device_settings(tc)
    state = _distributed_state(settings)
    data_version = None
    if examples is None:
        examples, data_version = _train_split(config)
    rows = conversations(examples)
    run = _shared_run(config, run, state)
    out = Path(output_dir) if output_dir else run.path(TRAIN_DIR)
    done = _finished(out)
    if done is not None:
        return done
    checkpoint = None
    if resume:
        checkpoint = last_checkpoint(out / "checkpoints")
        if checkpoint is None:
            raise LlamaduoError(f"--resume found no complete checkpoint in {out / 'checkpoints'}", "Start without --resume, or pass the --run whose training was interrupted.")
    with _main_first(state):  # the main process converts/downloads the base model once; the others then read it
        # A hub id, a model folder, or a run id / RUN:iter-K: continue from that run's (best) model.
        base = resolve_artifact(tc.base_model, config, prefer="merged").require("merged", "base", purpose="train.base_model")
        base_path = base.path
    settings = apply_device_settings(settings)
    started = time.perf_counter()
    trainer, template, dataset, settings = _build_trainer(config, rows, base_path, settings, out, run, state)
    if _is_main(state):
        run.event("train_started", base_model=tc.base_model, method=tc.method, examples=len(dataset), device=settings.model_dump(), resume_from=str(checkpoint) if checkpoint else None)
    try:
        output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except Exception as exc:
        if _is_oom(exc):
            raise LlamaduoError(
                f"out of memory while training {tc.base_model} (batch_size={tc.batch_size}, max_seq_len={tc.max_seq_len})",
                "Lower train.batch_size (raise train.grad_accum to keep the effective batch), lower train.max_seq_len, or use train.method=qlora on GPU.",
            ) from None
        raise
    metrics = {**output.metrics, "peak_memory_mb": round(peak_memory_mb(), 1), "wall_s": round(time.perf_counter() - started, 2)}
    result = _save_outputs(config, trainer, template, base_path, out, run, state, examples, data_version, settings, metrics, len(dataset))
    result.resumed_from = str(checkpoint) if checkpoint else None
    return result


def _build_trainer(config: Any, rows: list[dict[str, Any]], base_path: Path, settings: DeviceSettings, out: Path, run: RunFolder, state: Any) -> tuple[Any, Any, Any, DeviceSettings]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from llamaduo.train.metrics import RunMetrics
    from llamaduo.train.dataset import tokenized_rows, uses_tools
    from llamaduo.train.template import check_tool_loss_mask, prepare_chat_template

    tc = config.train
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    template = prepare_chat_template(tokenizer, tc.chat_template)
    rows = fit_length(rows, tokenizer, template.inference, tc.max_seq_len, tc.overflow)
    tokenized = uses_tools(rows)
    if tokenized:
        if tc.assistant_only_loss:
            check_tool_loss_mask(tokenizer, template)
        rows = tokenized_rows(rows, tokenizer, template.inference, template.training, tc.assistant_only_loss)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = template.end_of_turn  # padding is masked out of the loss by the attention mask
    tokenizer.chat_template = template.training if tc.assistant_only_loss else template.inference
    # GPU: load in bf16 (half the memory); CPU: keep fp32 master weights and autocast where bf16 is native.
    dtype = torch.bfloat16 if settings.device == "cuda" and settings.bf16 else torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": settings.attn_implementation}
    if tc.method == "qlora":
        _require("bitsandbytes", "QLoRA")
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16
        )
    model = AutoModelForCausalLM.from_pretrained(base_path, **kwargs)
    added_ids = [tokenizer.convert_tokens_to_ids(t) for t in template.added_tokens]
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    eot = tokenizer.convert_tokens_to_ids(template.end_of_turn)
    model.generation_config.eos_token_id = eot
    peft_config = None
    if tc.method != "full":
        rank, alpha = lora_rank(len(rows), tc.lora_r, tc.lora_alpha)
        peft_config = LoraConfig(
            r=rank, lora_alpha=alpha, lora_dropout=tc.lora_dropout, target_modules=tc.target_modules, task_type="CAUSAL_LM",
            # New ChatML tokens start untrained; only their embedding rows learn, not the whole vocabulary.
            trainable_token_indices=added_ids or None,
        )
    args = SFTConfig(
        output_dir=str(out / "checkpoints"),
        num_train_epochs=tc.epochs,
        max_steps=tc.max_steps or -1,
        learning_rate=tc.learning_rate,
        lr_scheduler_type=tc.lr_scheduler,
        warmup_steps=tc.warmup_ratio,  # transformers 5: a value below 1 is a ratio of the total steps
        per_device_train_batch_size=tc.batch_size,
        gradient_accumulation_steps=tc.grad_accum,
        max_length=tc.max_seq_len,
        # Rows llamaduo tokenized carry their own `assistant_masks`, which TRL turns into labels; its flag is for
        # conversational rows only (it refuses tokenized ones).
        assistant_only_loss=tc.assistant_only_loss and not tokenized,
        bf16=settings.bf16,
        fp16=False,
        use_cpu=settings.use_cpu,
        gradient_checkpointing=settings.gradient_checkpointing,
        logging_steps=tc.logging_steps,
        save_strategy="steps",
        save_steps=tc.save_steps,
        save_total_limit=tc.save_total_limit,
        seed=tc.seed,
        data_seed=tc.seed,
        report_to="none",
        include_num_input_tokens_seen="non_padding",
        ddp_find_unused_parameters=False,
        dataloader_num_workers=0,
        train_sampling_strategy=settings.sampler,
        disable_tqdm=not _is_main(state) or bool(os.environ.get("LLAMADUO_QUIET")),
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[RunMetrics(run if _is_main(state) else None, out / "metrics.jsonl")],
    )
    return trainer, template, rows, apply_model_tuning(settings, trainer.model)


def _save_outputs(config: Any, trainer: Any, template: Any, base_path: Path, out: Path, run: RunFolder, state: Any, examples: Sequence[Example], data_version: str | None, settings: DeviceSettings, metrics: dict[str, Any], n_rows: int) -> TrainResult:
    import torch

    from llamaduo.data.store import content_hash

    tc = config.train
    tokenizer = trainer.processing_class
    tokenizer.chat_template = template.inference  # the marker-free template renders the same text; it ships with the model
    adapter_dir = merged_dir = None
    if tc.method == "full":
        merged_dir = out / "merged"
        if trainer.args.should_save:
            save_model_folder(trainer.accelerator.unwrap_model(trainer.model), tokenizer, merged_dir, template.end_of_turn)
    else:
        adapter_dir = out / "adapter"
        trainer.save_model(str(adapter_dir))
        if trainer.args.should_save:
            tokenizer.save_pretrained(adapter_dir)
        if tc.merge:
            merged_dir = out / "merged"
            if trainer.args.should_save:
                dtype = torch.bfloat16 if settings.device == "cuda" and settings.bf16 else torch.float32
                save_merged(base_path, adapter_dir, merged_dir, tokenizer, template.end_of_turn, dtype)
    trainer.accelerator.wait_for_everyone()
    fields = {
        "base_model": tc.base_model,
        "base_model_hash": model_hash(base_path),
        "method": tc.method,
        "data": {"version": data_version, "content_hash": content_hash(list(examples)), "examples": len(examples), "trained_on": n_rows},
        "config_hash": config_hash(tc),
        "chat_template_sha": hashlib.sha256(template.inference.encode()).hexdigest()[:16],
        "end_of_turn": template.end_of_turn,
        "device": settings.model_dump(),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "llamaduo_version": __version__,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "metrics": metrics,
    }
    fingerprint = fields
    if _is_main(state):
        fingerprint = write_fingerprint(out, fields, adapter_dir, merged_dir)
        run.event("train_finished", fingerprint=fingerprint["id"], output_dir=str(out), **{k: v for k, v in metrics.items() if isinstance(v, int | float)})
    trainer.accelerator.wait_for_everyone()
    return TrainResult(
        run_id=run.run_id, output_dir=str(out), adapter_dir=str(adapter_dir) if adapter_dir else None,
        merged_dir=str(merged_dir) if merged_dir else None, fingerprint=fingerprint, metrics=metrics,
    )


def _finished(out: Path) -> TrainResult | None:
    """A run that already finished is not trained again (a rerun after a crash in a later stage)."""
    path = out / FINGERPRINT
    if not path.is_file():
        return None
    fingerprint = json.loads(path.read_text(encoding="utf-8"))
    adapter, merged = out / "adapter", out / "merged"
    return TrainResult(
        run_id=out.parent.name, output_dir=str(out), adapter_dir=str(adapter) if adapter.is_dir() else None,
        merged_dir=str(merged) if merged.is_dir() else None, fingerprint=fingerprint, metrics=fingerprint.get("metrics", {}),
    )


def _train_split(config: Any) -> tuple[list[Example], str | None]:
    from llamaduo.data.store import DatasetStore

    store = DatasetStore(config.path(config.data.store))
    return store.examples("train"), store.latest("train")


def _distributed_state(settings: DeviceSettings) -> Any:
    """Under `accelerate launch`/torchrun, join the process group early so the run id can be shared."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    return PartialState(cpu=settings.use_cpu)


def _is_main(state: Any) -> bool:
    return state is None or state.is_main_process


def _main_first(state: Any) -> Any:
    import contextlib

    return contextlib.nullcontext() if state is None else state.main_process_first()


def _shared_run(config: Any, run: RunFolder | None, state: Any) -> RunFolder:
    """One run folder for all processes: the main process creates it and broadcasts its id."""
    if run is not None:
        return run
    runs_dir = config.path(config.project.runs_dir)
    if state is None:
        return RunFolder.create(runs_dir, config, run_id=new_run_id(f"{config.project.name}-train"))
    from accelerate.utils import broadcast_object_list

    box = [new_run_id(f"{config.project.name}-train") if state.is_main_process else None]
    broadcast_object_list(box)
    if state.is_main_process:
        RunFolder.create(runs_dir, config, run_id=box[0])
    state.wait_for_everyone()
    return RunFolder(Path(runs_dir) / str(box[0]))


def _is_oom(exc: BaseException) -> bool:
    import torch

    text = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


def _require(module: str, what: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise LlamaduoError(f"{what} needs the {module} package", f"pip install {module} (CUDA only), or set train.method=lora.")
