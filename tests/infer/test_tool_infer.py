"""`infer` on prompts that offer tools: rendered as `serve` renders them, answers parsed into OpenAI tool calls."""

from __future__ import annotations

import pytest

from llamaduo.config import load_config
from llamaduo.errors import LlamaduoError
from llamaduo.infer import infer, read_answers
from llamaduo.infer.engines.tools import render_tools_prompt
from llamaduo.records import Example, Message

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def _examples() -> list[Example]:
    call = {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    tooled = [Message(role="user", content="weather: Oslo"), Message(role="assistant", tool_calls=[call])]
    plain = [Message(role="user", content="repeat: red"), Message(role="assistant", content="red")]
    return [Example(id="t", task="tools", messages=tooled, tools=[WEATHER]), Example(id="p", task="tools", messages=plain)]


def test_tool_prompts_render_with_their_tools_and_plain_ones_as_before(tiny_chat_model, tmp_path):
    config = load_config(data={"project": {"workdir": str(tmp_path)}, "infer": {"max_new_tokens": 4}})
    result = infer(config, str(tiny_chat_model), examples=_examples(), output=tmp_path / "a.jsonl")
    tooled, plain = read_answers(result.answers_path)
    from transformers import AutoTokenizer

    template = AutoTokenizer.from_pretrained(tiny_chat_model).chat_template
    assert tooled.rendered_prompt == render_tools_prompt(template, [m.model_dump() for m in tooled.messages], [WEATHER])
    assert '"name": "get_weather"' in tooled.rendered_prompt and "<tools>" not in plain.rendered_prompt
    assert tooled.reference == '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    assert plain.tool_calls is None


def test_openai_backend_refuses_tool_prompts(tmp_path):
    config = load_config(data={"project": {"workdir": str(tmp_path)}, "infer": {"backend": "openai", "endpoints": ["http://127.0.0.1:9/v1"]}})
    with pytest.raises(LlamaduoError, match="does not send tools"):
        infer(config, "served-model", examples=_examples(), output=tmp_path / "a.jsonl")
