"""Chat template handling: generation markers cover the answer and its end-of-turn token; ChatML for base models."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from llamaduo.errors import LlamaduoError
from llamaduo.train.dataset import conversations, fit_length, lora_rank
from llamaduo.train.template import add_generation_markers, loss_mask, prepare_chat_template
from tests.tiny import build_tiny_model, chats

CHAT = [
    {"role": "user", "content": "repeat: red cat"},
    {"role": "assistant", "content": "red cat"},
    {"role": "user", "content": "repeat: sun"},
    {"role": "assistant", "content": "sun"},
]


def test_markers_cover_every_answer_and_its_end_of_turn_token(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    original = tok.chat_template
    template = prepare_chat_template(tok, "model")
    assert "{% generation %}" not in original and "{% generation %}" in template.training
    assert template.end_of_turn == "<|im_end|>"
    ids, mask = loss_mask(tok, template.training, CHAT)
    learned = tok.decode([i for i, m in zip(ids, mask) if m])
    assert learned.count("<|im_end|>") == 2  # both answers end with the end-of-turn token inside the loss
    assert "red cat" in learned and "sun" in learned and "repeat" not in learned and "system" not in learned
    # The markers render to nothing: training text and the saved inference template's text are identical.
    assert tok.apply_chat_template(CHAT, chat_template=template.training, tokenize=False) == tok.apply_chat_template(CHAT, chat_template=original, tokenize=False)
    assert template.inference == original and tok.chat_template == original


def test_trl_agrees_the_stop_token_is_trained(tiny_model):
    from trl.chat_template_utils import is_chat_template_stop_token_trained

    tok = AutoTokenizer.from_pretrained(tiny_model)
    template = prepare_chat_template(tok, "model")
    assert not is_chat_template_stop_token_trained(tok)  # the plain template puts no answer in the mask
    assert is_chat_template_stop_token_trained(tok, chat_template=template.training)


def test_chatml_for_a_base_model_without_template(tmp_path):
    tok = AutoTokenizer.from_pretrained(build_tiny_model(tmp_path / "base", template=None))
    with pytest.raises(LlamaduoError, match="chat_template=chatml"):
        prepare_chat_template(tok, "model")
    template = prepare_chat_template(tok, "chatml")
    assert template.added_tokens == ["<|im_start|>", "<|im_end|>"] and template.end_of_turn == "<|im_end|>"
    ids, mask = loss_mask(tok, template.training, CHAT[:2])
    assert tok.convert_tokens_to_ids("<|im_end|>") in [i for i, m in zip(ids, mask) if m]


def test_template_without_a_content_expression_is_refused():
    assert add_generation_markers("{% for m in messages %}{{ m.content | trim }}{% endfor %}") is None


def test_data_checks():
    no_answers = [e.model_copy(update={"messages": e.messages[:1]}) for e in chats(3)]
    with pytest.raises(LlamaduoError, match="ends with an assistant answer"):
        conversations(no_answers)
    assert lora_rank(1000, None, None) == (8, 16)
    assert lora_rank(20_000, None, None) == (16, 32)
    assert lora_rank(100_000, None, None) == (32, 64)
    assert lora_rank(100, 4, None) == (4, 8) and lora_rank(100, 4, 7) == (4, 7)


def test_overlong_examples_are_refused_or_dropped_never_truncated(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    rows = conversations(chats(4))
    long = {"messages": [{"role": "user", "content": "red " * 200}, {"role": "assistant", "content": "ok"}]}
    with pytest.raises(LlamaduoError, match="max_seq_len=64"):
        fit_length(rows + [long], tok, tok.chat_template, 64, "error")
    assert fit_length(rows + [long], tok, tok.chat_template, 64, "drop") == rows
