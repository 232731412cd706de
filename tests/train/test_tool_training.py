"""Training on tool calls: the renderer serve uses, the template's own tool support or the fallback, and a loss
that covers the calls (name, arguments, end-of-turn) but not the tools' results or the prompt."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from llamaduo.errors import LlamaduoError
from llamaduo.infer.engines.tools import render_tools_prompt
from llamaduo.records import Example, Message
from llamaduo.train.dataset import conversations, fit_length, tokenized_rows, uses_tools
from llamaduo.train.template import check_tool_loss_mask, prepare_chat_template
from tests.tiny import WORDS, build_tiny_model, chats
from tests.train.conftest import tiny_config

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def tool_chats(n: int = 12, seed: int = 0) -> list[Example]:
    """Prompts whose answer is a call with an argument taken from the prompt; every third one also has the result
    and a final text answer, so results sit between two trained turns."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        word = rng.choice(WORDS)
        call = {"id": f"call_{i}", "type": "function", "function": {"name": "get_weather", "arguments": f'{{"city": "{word}"}}'}}
        messages = [Message(role="user", content=f"weather: {word}"), Message(role="assistant", tool_calls=[call])]
        if i % 3 == 0:
            messages += [Message(role="tool", content=f"RESULT {word} 21", tool_call_id=f"call_{i}"), Message(role="assistant", content=f"{word} is warm")]
        out.append(Example(id=Example.content_id("tools", messages, [WEATHER]) + str(i), task="tools", messages=messages, tools=[WEATHER]))
    return out


def _qwen_template() -> str:
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja").read_text(encoding="utf-8")


def _learned(tok, row: dict) -> tuple[str, str]:
    ids, mask = row["input_ids"], row["assistant_masks"]
    return tok.decode([i for i, m in zip(ids, mask) if m]), tok.decode([i for i, m in zip(ids, mask) if not m])


def test_fallback_format_puts_calls_in_the_loss_and_matches_serving(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    template = prepare_chat_template(tok, "model")
    assert check_tool_loss_mask(tok, template) == "fallback"  # SmolLM2's template has no tool support
    rows = conversations(tool_chats(3))
    assert uses_tools(rows) and not uses_tools(conversations(chats(2)))
    tokenized = tokenized_rows(rows, tok, template.inference, template.training, True)
    learned, context = _learned(tok, tokenized[0])
    word = rows[0]["messages"][0]["content"].split()[-1]
    assert f'<tool_call>{{"name": "get_weather", "arguments": {{"city": "{word}"}}}}</tool_call><|im_end|>' in learned
    assert f"{word} is warm<|im_end|>" in learned and learned.count("<|im_end|>") == 2
    assert "RESULT" not in learned and "<tool_response>" in context and '"description": "Weather of a city"' in context
    # The prompt part of the training text is exactly what serve renders for the same chat and tools.
    prompt = render_tools_prompt(template.inference, rows[1]["messages"][:1], [WEATHER])
    assert tok.decode(tokenized[1]["input_ids"]).startswith(prompt)


def test_a_template_with_tool_support_renders_calls_its_own_way(tmp_path):
    tok = AutoTokenizer.from_pretrained(build_tiny_model(tmp_path / "qwen", template=_qwen_template()))
    template = prepare_chat_template(tok, "model")  # TRL's Qwen 2.5 training template has markers around the calls
    assert check_tool_loss_mask(tok, template) == "native"
    rows = conversations(tool_chats(1))
    learned, context = _learned(tok, tokenized_rows(rows, tok, template.inference, template.training, True)[0])
    word = rows[0]["messages"][0]["content"].split()[-1]
    assert f'<tool_call>\n{{"name": "get_weather", "arguments": {{"city": "{word}"}}}}\n</tool_call><|im_end|>' in learned
    assert "# Tools" in context and "RESULT" in context and "RESULT" not in learned
    lengths = fit_length(rows, tok, template.inference, 10_000, "error")
    assert lengths == rows


def test_a_template_whose_markers_miss_the_calls_is_refused(tmp_path):
    tok = AutoTokenizer.from_pretrained(build_tiny_model(tmp_path / "qwen", template="{#- own copy -#}\n" + _qwen_template()))
    template = prepare_chat_template(tok, "model")  # not TRL's known template: markers wrap the content only
    with pytest.raises(LlamaduoError, match="tool calls .* out of the loss.*chat_template=chatml"):
        check_tool_loss_mask(tok, template)


def test_tiny_model_trains_on_tool_calls_with_trl_labels_on_the_calls_only(tiny_model, tmp_path):
    import torch

    from llamaduo.runs import RunFolder
    from llamaduo.train.device import device_settings
    from llamaduo.train.trainer import _build_trainer

    config = tiny_config(tmp_path, tiny_model, max_steps=3, save_steps=10, max_seq_len=512)
    examples = tool_chats(12) + chats(4)  # tool calls mixed with plain chats, as an application's logs are
    rows = conversations(examples)
    run = RunFolder.create(tmp_path / "runs", config, run_id="tools")
    trainer, template, used, _ = _build_trainer(config, rows, tiny_model, device_settings(config.train), tmp_path / "out", run, None)
    tok = trainer.processing_class
    assert len(used) == 16 and {"input_ids", "labels"} <= set(trainer.train_dataset.column_names)
    first = trainer.train_dataset[0]
    learned = tok.decode([t for t, label in zip(first["input_ids"], first["labels"]) if label != -100])
    word = examples[0].messages[0].content.split()[-1]
    assert learned.startswith('<tool_call>{"name": "get_weather"') and f'"city": "{word}"' in learned and "RESULT" not in learned
    assert learned.count("<|im_end|>") == 2 and "weather:" not in learned
    plain = trainer.train_dataset[12]  # a text-only row still learns only its answer
    plain_learned = tok.decode([t for t, label in zip(plain["input_ids"], plain["labels"]) if label != -100])
    assert plain_learned.startswith(examples[12].reference + "<|im_end|>") and "repeat" not in plain_learned
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters() if "lora_B" in k}
    trainer.train()
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.named_parameters() if k in before)  # the calls were learned from
