"""The one sampling and precision policy of every engine: what greedy and sampled decoding mean, and which dtype runs.

`llamaduo infer`, `serve`, export parity and the demo all take their decoding settings from here, so a setting cannot
mean one thing where answers are judged and another where they are served.
"""

from __future__ import annotations

from typing import Any

from llamaduo.infer.engines.base import GenParams


def infer_params(infer: Any, prompt_ids: list[int] | None = None) -> GenParams:
    """The loop's decoding: K = 1 is greedy (reproducible); K > 1 samples with temperature and top_p, seed + k per sample."""
    if infer.samples == 1:
        return GenParams(list(prompt_ids or []), infer.max_new_tokens, temperature=0.0, top_p=1.0, seed=infer.seed)
    return GenParams(list(prompt_ids or []), infer.max_new_tokens, temperature=infer.temperature, top_p=infer.top_p, seed=infer.seed)


def describe_params(infer: Any) -> dict[str, Any]:
    """The decoding settings recorded with every answer."""
    p = infer_params(infer)
    if p.greedy:
        return {"do_sample": False, "max_new_tokens": p.max_tokens}
    return {"do_sample": True, "temperature": p.temperature, "top_p": p.top_p, "max_new_tokens": p.max_tokens, "seed": p.seed}


def transformers_decoding(params: GenParams) -> dict[str, Any]:
    """`model.generate` arguments. top_k is off (0) as in the OpenAI API; greedy overrides any generation_config default."""
    if params.greedy:
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    return {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}


def llamacpp_decoding(params: GenParams) -> dict[str, Any]:
    """`Llama.generate` arguments matching `transformers_decoding`: no top_k, no min_p, no repeat penalty."""
    if params.greedy:
        return {"temp": 0.0, "top_p": 1.0, "top_k": 1, "min_p": 0.0, "repeat_penalty": 1.0}
    return {"temp": params.temperature, "top_p": params.top_p, "top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0}


def torch_dtype(precision: str):
    """bf16 on GPUs and on CPUs with native bf16 (auto), else fp32; an explicit bf16/fp32 wins."""
    import torch

    from llamaduo.train.device import bf16_supported

    return torch.bfloat16 if bf16_supported(precision) else torch.float32
