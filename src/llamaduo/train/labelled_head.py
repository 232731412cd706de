"""The training loss's LM head on CPU: project only the positions that carry a label.

TRL's fused LM head scores every position on devices without Triton (it keeps tile shapes fixed for compilers). On a
CPU that is most of the head's work wasted: with `assistant_only_loss` the prompt (a summarization task's whole
passage) and the padding are masked out of the loss, yet each position still pays a 576 x 49152 projection, about a
fifth of SmolLM2-135M's FLOPs per token. This head gathers the labelled positions first and returns the same fields
TRL's `compute_loss` reads, so its loss, metrics and token counting stay TRL's own.
"""

from __future__ import annotations

import functools
import types
from typing import Any

# Labelled tokens projected at once: 2048 x 49152 fp32 logits are 400 MB. Longer batches recompute each chunk's
# projection in the backward pass instead of keeping every chunk's logits alive.
CHUNK_TOKENS = 2048


def supports_labelled_head(model: Any) -> bool:
    """Plain causal LMs only: logit soft-capping, logit scaling and MoE router losses stay on TRL's path."""
    config = model.config.get_text_config()
    unusual = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")
    return not any(getattr(config, name, None) not in (None, 1.0) for name in unusual) and not getattr(config, "output_router_logits", False)


def add_labelled_head(model: Any) -> bool:
    """Wrap the (TRL-patched) forward of `model`'s base model; returns whether the labelled-position head is in use."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not supports_labelled_head(base):
        return False
    from trl.trainer.utils import FusedCausalLMOutput

    fused_forward = base.forward  # TRL's: it takes `fused_lm_head`, and without it runs the model's own forward

    @functools.wraps(type(base).forward)
    def forward(self: Any, *args: Any, fused_lm_head: bool = False, labels: Any = None, shift_labels: Any = None,
                num_items_in_batch: Any = None, **kwargs: Any) -> Any:
        if not fused_lm_head or shift_labels is not None or kwargs.get("output_router_logits"):
            return fused_forward(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels,
                                 num_items_in_batch=num_items_in_batch, **kwargs)
        kwargs["use_cache"] = False
        hidden = getattr(self, self.base_model_prefix)(*args, **kwargs).last_hidden_state[:, :-1]
        labels = labels[:, 1:].to(hidden.device)
        mask = labels != -100
        log_probs, entropy, is_top1 = labelled_log_probs(self.get_output_embeddings(), hidden[mask], labels[mask])
        # masked_scatter keeps an all-masked batch connected to the graph: its loss is a differentiable zero.
        per_token = [x.new_zeros(mask.shape).masked_scatter(mask, x) for x in (log_probs, entropy, is_top1)]
        denominator = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-per_token[0].sum() / denominator, log_probs=per_token[0], entropy=per_token[1],
                                   is_top1=per_token[2], label_mask=mask)

    base.forward = types.MethodType(forward, base)
    return True


def labelled_log_probs(head: Any, hidden: Any, labels: Any) -> tuple[Any, Any, Any]:
    """Log-probability of each label (with gradient), and the entropy and top-1 hit of each position (without)."""
    import torch
    from torch.utils.checkpoint import checkpoint

    if hidden.shape[0] <= CHUNK_TOKENS:
        return _chunk(head.weight, head.bias, hidden, labels)
    parts = [checkpoint(_chunk, head.weight, head.bias, h, y, use_reentrant=False)
             for h, y in zip(hidden.split(CHUNK_TOKENS), labels.split(CHUNK_TOKENS), strict=True)]
    return tuple(torch.cat(column) for column in zip(*parts, strict=True))  # type: ignore[return-value]


def _chunk(weight: Any, bias: Any, hidden: Any, labels: Any) -> tuple[Any, Any, Any]:
    import torch
    import torch.nn.functional as F

    logits = F.linear(hidden, weight, bias).float()
    log_softmax = logits.log_softmax(-1)  # once: the loss gathers from it and the entropy reads it
    log_probs = log_softmax.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        entropy = -(log_softmax.exp() * log_softmax).sum(-1)
        is_top1 = (logits.argmax(-1) == labels).to(logits.dtype)
    return log_probs, entropy, is_top1
