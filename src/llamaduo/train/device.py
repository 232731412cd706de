"""Device-aware defaults: what precision, checkpointing and attention kernel suit the hardware we run on."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from llamaduo.errors import LlamaduoError


class DeviceSettings(BaseModel):
    """The resolved hardware choices, recorded in the run so a reader knows how the model was trained."""

    device: str
    """cuda or cpu."""
    bf16: bool
    gradient_checkpointing: bool
    attn_implementation: str
    use_cpu: bool


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """bf16 autocast only pays off on CPUs with bf16 instructions; elsewhere it is emulated and slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def bf16_supported(precision: str) -> bool:
    """Whether to compute in bf16, honouring an explicit `precision` over the hardware's default."""
    import torch

    if precision == "fp32":
        return False
    if cuda_available():
        native = torch.cuda.is_bf16_supported()
    else:
        native = cpu_has_native_bf16()
    if precision == "bf16" and cuda_available() and not native:
        raise LlamaduoError("precision bf16 was asked for, but this GPU does not support bf16", "Set precision to auto or fp32.")
    return native if precision == "auto" else True


def device_settings(train: Any) -> DeviceSettings:
    """CPU: use_cpu, bf16 only where native, no gradient checkpointing. GPU: bf16, checkpointing, optional flash attention."""
    gpu = cuda_available()
    if train.method == "qlora" and not gpu:
        raise LlamaduoError("QLoRA needs a CUDA GPU (bitsandbytes 4-bit), and none is visible", "Set train.method=lora to train on CPU.")
    checkpointing = train.gradient_checkpointing if train.gradient_checkpointing is not None else gpu
    attn = "sdpa"
    if train.flash_attention:
        if not gpu:
            raise LlamaduoError("flash attention needs a CUDA GPU", "Set train.flash_attention=false on CPU.")
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            raise LlamaduoError("train.flash_attention is on, but the flash-attn package is not installed", "pip install flash-attn, or set train.flash_attention=false.") from None
        attn = "flash_attention_2"
    return DeviceSettings(
        device="cuda" if gpu else "cpu",
        bf16=bf16_supported(train.precision),
        gradient_checkpointing=checkpointing,
        attn_implementation=attn,
        use_cpu=not gpu,
    )


def peak_memory_mb() -> float:
    """Peak memory of this process so far: GPU allocator peak on CUDA, else the resident set high-water mark."""
    import resource
    import sys

    if cuda_available():
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
