"""The demo's data and config: every sampled row trains whole and can be answered whole, and the config is valid."""

from __future__ import annotations

import json

import pytest

from llamaduo.config import load_config
from llamaduo.errors import LlamaduoError
from llamaduo.loop.demo import MAX_SEQ_LEN, SIZES, demo_config, demo_subset


def test_demo_subset_keeps_only_rows_that_fit_and_is_seeded(shared_data, tmp_path):
    from transformers import AutoTokenizer

    from llamaduo.data.layouts import to_chat
    from llamaduo.train.base_model import SMOLLM2_ID, resolve_base_model
    from llamaduo.train.dataset import token_lengths

    first = demo_subset(shared_data, tmp_path / "a.jsonl", 30, max_tokens=256, max_answer_tokens=48)
    rows = [json.loads(line) for line in first.read_text().splitlines()]
    assert len(rows) == 30
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(SMOLLM2_ID))
    assert max(token_lengths([{"messages": to_chat("dolly", r)[0]} for r in rows], tokenizer, tokenizer.chat_template)) <= 256
    assert max(len(ids) for ids in tokenizer([r["response"] for r in rows], add_special_tokens=False)["input_ids"]) <= 48
    assert demo_subset(shared_data, tmp_path / "b.jsonl", 30, max_tokens=256, max_answer_tokens=48).read_text() == first.read_text()
    with pytest.raises(LlamaduoError, match=r"only \d+ Dolly summarization rows fit the demo's limits, 5000 are needed"):
        demo_subset(shared_data, tmp_path / "c.jsonl", 5000, max_tokens=256, max_answer_tokens=48)


@pytest.mark.parametrize("quick", [False, True])
def test_demo_config_is_valid_and_asks_for_one_synthetic_round(quick, tmp_path):
    size = SIZES[quick]
    config = load_config(data=demo_config(tmp_path, tmp_path / "d.jsonl", "http://127.0.0.1:9/v1", quick=quick))
    assert config.data.test_size == size.test_size and config.evaluate.judge_sample == size.judged < size.test_size
    assert config.train.max_seq_len == MAX_SEQ_LEN and config.infer.max_new_tokens == size.max_new_tokens
    # min_train exceeds the train split (rows minus test), so the loop synthesises before the first training.
    assert config.loop.min_train > size.rows - size.test_size and config.synth.max_calls == size.synthetic_calls
    assert config.loop.plateau_metric == "rouge_l.mean" and config.loop.max_iterations == 1
