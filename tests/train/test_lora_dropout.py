"""The CPU LoRA dropout drops at the configured rate, keeps the expectation, and routes gradients through its mask."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llamaduo.train.lora_dropout import PackedBitsDropout, use_packed_bits_dropout


def test_drop_rate_and_expectation() -> None:
    torch.manual_seed(0)
    x = torch.ones(1000, 1000)
    out = PackedBitsDropout(0.05).train()(x)
    dropped = (out == 0).float().mean().item()
    assert abs(dropped - 0.05) < 0.002  # 1e6 draws: the standard error is 0.0002
    assert abs(out.mean().item() - 1.0) < 0.005
    kept = out[out != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - 3277 / 65536)))


def test_gradient_is_the_forward_mask() -> None:
    torch.manual_seed(1)
    x = torch.randn(37, 53, requires_grad=True)  # an odd element count: the last 64-bit draw is partly used
    out = PackedBitsDropout(0.3).train()(x)
    out.backward(torch.ones_like(out))
    multiplier = out.detach() / x.detach()
    torch.testing.assert_close(x.grad, multiplier)
    assert 0.25 < (x.grad == 0).float().mean().item() < 0.35


def test_eval_mode_and_zero_probability_are_identity() -> None:
    x = torch.randn(4, 8)
    assert PackedBitsDropout(0.5).eval()(x) is x
    assert PackedBitsDropout(0.0).train()(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        PackedBitsDropout(1.0)


def test_swaps_every_lora_dropout_and_keeps_the_adapter(tiny_model: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules="all-linear", task_type="CAUSAL_LM"))
    keys = set(model.state_dict())
    lora_layers = sum(1 for m in model.modules() if isinstance(getattr(m, "lora_dropout", None), torch.nn.ModuleDict))
    assert use_packed_bits_dropout(model) == lora_layers > 0
    assert set(model.state_dict()) == keys  # nothing saved with the adapter changes
    swapped = [d for m in model.modules() if isinstance(getattr(m, "lora_dropout", None), torch.nn.ModuleDict) for d in m.lora_dropout.values()]
    assert all(isinstance(d, PackedBitsDropout) and d.p == 0.1 for d in swapped)
    model.train()
    ids = torch.randint(0, model.config.vocab_size, (2, 6))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and "lora_" in n)
    assert use_packed_bits_dropout(model) == 0  # already swapped
