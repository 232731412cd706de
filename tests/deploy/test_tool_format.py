"""engines/tools.py: the call format read off a chat template, the fallback format, parsing answers, decoding schemas."""

from __future__ import annotations

import json

import pytest

from llamaduo.infer.engines.tools import (
    FALLBACK, ToolSpecError, check_tools, decoding_schema, parse_tool_calls, prepare_chat, render_tools_prompt, resolve_choice,
    tool_call, tool_format,
)
from tests.deploy.tiny_model import CHATML

# A tool-aware template in the Hermes/Qwen style (written for this test): definitions in the system turn, each call
# as <tool_call>\n{json}\n</tool_call>, results as a user turn.
HERMES = (
    "{% if tools %}<|im_start|>system\n{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n\\n' }}{% endif %}"
    "{{ 'Tools:\\n<tools>' }}{% for t in tools %}{{ '\\n' + (t | tojson) }}{% endfor %}{{ '\\n</tools><|im_end|>\\n' }}"
    "{% elif messages[0]['role'] == 'system' %}{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{% endif %}"
    "{% for m in messages %}{% if m['role'] == 'system' %}"
    "{% elif m['role'] == 'assistant' and m.tool_calls %}{{ '<|im_start|>assistant' }}"
    "{% if m['content'] %}{{ '\\n' + m['content'] }}{% endif %}"
    "{% for c in m.tool_calls %}{{ '\\n<tool_call>\\n{\"name\": \"' + c.function.name + '\", \"arguments\": ' + (c.function.arguments | tojson) + '}\\n</tool_call>' }}{% endfor %}"
    "{{ '<|im_end|>\\n' }}"
    "{% elif m['role'] == 'tool' %}{{ '<|im_start|>user\\n<tool_response>\\n' + m['content'] + '\\n</tool_response><|im_end|>\\n' }}"
    "{% else %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Llama 3.1's convention: a call is a bare JSON object with `parameters`, one per turn.
BARE = (
    "{% if tools %}{{ '<tools>' + (tools | tojson) }}{% endif %}{% for m in messages %}{{ '<' + m['role'] + '>' }}{% if m.tool_calls %}"
    "{% if m.tool_calls | length > 1 %}{{ raise_exception('one call per turn') }}{% endif %}"
    "{{ '{\"name\": \"' + m.tool_calls[0].function.name + '\", \"parameters\": ' + (m.tool_calls[0].function.arguments | tojson) + '}' }}"
    "{% else %}{{ m['content'] }}{% endif %}{{ '<end>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<assistant>' }}{% endif %}"
)
NO_SYSTEM = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{{ '<' + m['role'] + '>' + m['content'] + '<end>' }}{% endfor %}{% if add_generation_prompt %}{{ '<assistant>' }}{% endif %}"
)
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
HISTORY = [
    {"role": "user", "content": "Weather in Oslo?"},
    {"role": "assistant", "content": None, "tool_calls": [tool_call("get_weather", {"city": "Oslo"}, "call_1")]},
    {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
    {"role": "tool", "tool_call_id": "call_2", "content": "5 C"},
]


def test_the_call_format_is_read_off_a_template_that_renders_tools():
    fmt = tool_format(HERMES)
    assert fmt.native and (fmt.open, fmt.close, fmt.name_key, fmt.args_key) == ("<tool_call>\n", "\n</tool_call>", "name", "arguments")
    bare = tool_format(BARE)  # the two-call probe is refused; one call still shows the format
    assert bare.native and (bare.open, bare.close, bare.args_key) == ("", "", "parameters")
    assert tool_format(CHATML) == FALLBACK and not tool_format(None).native
    messages, extra = prepare_chat(HISTORY, [WEATHER], HERMES)
    assert extra == {"tools": [WEATHER]} and messages[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Oslo"}
    assert messages[1]["content"] == "" and messages[2]["role"] == "tool"


def test_transformers_renders_a_native_template_as_the_sandbox_does(tiny_model):
    """Training and the transformers engine render through the tokenizer, llama.cpp through the sandbox: same text."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    messages, extra = prepare_chat(HISTORY, [WEATHER], HERMES)
    via_hf = tok.apply_chat_template(messages, chat_template=HERMES, add_generation_prompt=True, tokenize=False, **extra)
    assert via_hf == render_tools_prompt(HERMES, HISTORY, [WEATHER])
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>' in via_hf


def test_the_fallback_format_for_templates_without_tools():
    text = render_tools_prompt(CHATML, [{"role": "system", "content": "Be brief."}, *HISTORY], [WEATHER])
    system = text.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nBe brief.\n\nYou can call these functions:\n<tools>\n")
    assert json.dumps(WEATHER["function"]) in system and "<tool_call>{" in system
    assert '<|im_start|>assistant\n<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call><|im_end|>' in text
    # Consecutive results share one user turn.
    assert "<|im_start|>user\n<tool_response>rain</tool_response>\n<tool_response>5 C</tool_response><|im_end|>" in text
    # A template that refuses a system turn gets the definitions at the top of the first user turn.
    assert tool_format(NO_SYSTEM).system_role is False
    gemma_like = render_tools_prompt(NO_SYSTEM, HISTORY[:1], [WEATHER])
    assert gemma_like.startswith("<user>You can call these functions:") and gemma_like.endswith("Weather in Oslo?<end><assistant>")


def test_plain_chats_render_as_before():
    plain = [{"role": "user", "content": "hi"}]
    assert prepare_chat(plain, None, HERMES) == (plain, {})
    assert render_tools_prompt(CHATML, plain) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_parsing_answers_into_calls():
    fmt = tool_format(HERMES)
    content, calls = parse_tool_calls('Sure.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
                                      '\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>', fmt)
    assert content == "Sure." and [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("get_weather", '{"city": "Oslo"}'), ("get_time", "{}")]
    assert calls[0]["id"].startswith("call_") and calls[0]["type"] == "function"
    truncated = '<tool_call>{"name": "get_weather", "arguments": {"ci'
    assert parse_tool_calls(truncated) == (truncated, [])
    assert parse_tool_calls('<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>', names=["get_weather"])[1] == []
    # Markers dropped (special tokens skipped in decoding): a bare call of a known function still counts.
    assert parse_tool_calls('{"name": "get_weather", "arguments": {"city": "Oslo"}}', names={"get_weather"})[1][0]["function"]["name"] == "get_weather"
    assert parse_tool_calls('{"answer": 42}', names={"get_weather"}) == ('{"answer": 42}', [])
    _, bare = parse_tool_calls('{"name": "get_weather", "parameters": {"city": "Oslo"}}', tool_format(BARE))
    assert json.loads(bare[0]["function"]["arguments"]) == {"city": "Oslo"}


def test_definitions_and_tool_choice_are_checked():
    assert check_tools([{"type": "function", "function": {"name": "f"}}])[0]["function"]["parameters"] == {"type": "object", "properties": {}}
    with pytest.raises(ToolSpecError, match="defined twice"):
        check_tools([WEATHER, WEATHER])
    assert resolve_choice(None, [WEATHER]) == ("auto", None) and resolve_choice(None, None) == ("none", None)
    assert resolve_choice({"type": "function", "function": {"name": "get_weather"}}, [WEATHER]) == ("required", "get_weather")


def test_decoding_schema_turns_small_integer_ranges_into_enums():
    schema = {"type": "object", "properties": {
        "days": {"type": "integer", "minimum": 1, "maximum": 5},
        "year": {"type": "integer", "minimum": 1900, "maximum": 2100},
        "list": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 2}},
    }}
    out = decoding_schema(schema)["properties"]
    assert out["days"]["enum"] == [1, 2, 3, 4, 5] and "enum" not in out["year"] and out["list"]["items"]["enum"] == [0, 1, 2]
    assert decoding_schema({}) == {"type": "object"} and "enum" not in schema["properties"]["days"]  # the input is untouched
