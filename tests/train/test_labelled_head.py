"""The CPU loss head that projects only labelled positions gives TRL's fused head's loss, metrics and gradients."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from llamaduo.train import labelled_head
from llamaduo.train.labelled_head import add_labelled_head, supports_labelled_head


def _pair(tiny_model: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    peft = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM", init_lora_weights=False)
    trl_model = get_peft_model(base, peft)
    add_fused_lm_head(trl_model.get_base_model(), outputs=("log_probs", "entropy", "is_top1"))
    ours = copy.deepcopy(trl_model)
    assert add_labelled_head(ours)
    return trl_model, ours


def _batch(vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (3, 12), generator=g)
    attention = torch.ones_like(ids)
    attention[2, 9:] = 0  # a padded row
    labels = ids.clone()
    labels[:, :5] = -100  # the prompt
    labels[2, 9:] = -100
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


@pytest.mark.parametrize("chunk", [None, 7])
def test_same_loss_metrics_and_gradients_as_trl(tiny_model: Path, monkeypatch: pytest.MonkeyPatch, chunk: int | None) -> None:
    if chunk:  # force several chunks, each recomputed in backward
        monkeypatch.setattr(labelled_head, "CHUNK_TOKENS", chunk)
    trl_model, ours = _pair(tiny_model)
    batch = _batch(trl_model.config.vocab_size)
    a = trl_model(**batch, fused_lm_head=True)
    b = ours(**batch, fused_lm_head=True)
    assert torch.equal(a.label_mask, b.label_mask)
    assert b.label_mask.sum() == 7 + 7 + 4  # positions 5-11 of each row; 5-8 of the padded one
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-5, atol=1e-5)
    for field in ("log_probs", "entropy", "is_top1"):
        torch.testing.assert_close(getattr(b, field).float(), getattr(a, field).float(), rtol=1e-4, atol=1e-4)
    a.loss.backward()
    b.loss.backward()
    grads = {n: p.grad for n, p in trl_model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None for g in grads.values())
    for name, param in ours.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param.grad, grads[name], rtol=1e-4, atol=1e-6)


def test_all_masked_batch_is_a_differentiable_zero(tiny_model: Path) -> None:
    _, ours = _pair(tiny_model)
    batch = _batch(ours.config.vocab_size)
    batch["labels"][:] = -100
    out = ours(**batch, fused_lm_head=True)
    assert out.loss.item() == 0.0
    out.loss.backward()  # must not raise


def test_plain_forward_and_unusual_heads_stay_on_their_paths(tiny_model: Path) -> None:
    _, ours = _pair(tiny_model)
    batch = _batch(ours.config.vocab_size)
    logits = ours(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert logits.shape == (3, 12, ours.config.vocab_size)  # generation and evaluation see the model's own forward
    softcapped = copy.deepcopy(ours.get_base_model())
    softcapped.config.final_logit_softcapping = 30.0
    assert not supports_labelled_head(softcapped)
