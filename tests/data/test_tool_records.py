"""Tool-calling fields on records: the OpenAI shape in, the same shape out, and text-only ids unchanged."""

from __future__ import annotations

import hashlib
import json

import pytest
from pydantic import ValidationError

from llamaduo.records import Answer, Example, Message


def _old_id(task: str, messages: list[dict]) -> str:
    # The id as it was computed before tool calling existed: existing stores must keep their ids.
    blob = json.dumps({"task": task, "messages": messages}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def test_text_only_ids_and_dumps_do_not_change() -> None:
    plain = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi ü"}, {"role": "assistant", "content": "Hello."}]
    msgs = [Message(**m) for m in plain]
    assert Example.content_id("chat", msgs) == _old_id("chat", plain) == Example.content_id("chat", plain)
    assert [m.model_dump() for m in msgs] == plain
    ex = Example(id="x", task="chat", messages=msgs)
    assert "tools" not in ex.model_dump() and ex.reference == "Hello."


def test_tool_call_turns_keep_the_openai_shape() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    turn = Message(role="assistant", tool_calls=[call])
    dumped = turn.model_dump()
    assert dumped == {"role": "assistant", "content": None, "tool_calls": [{**call, "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}
    result = Message(role="tool", content='{"temp": 21}', tool_call_id="call_1")
    assert result.model_dump() == {"role": "tool", "content": '{"temp": 21}', "tool_call_id": "call_1"}
    assert turn.text == '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    msgs = [Message(role="user", content="Weather in Paris?"), turn]
    ex = Example(id=Example.content_id("t", msgs, tools), task="t", messages=msgs, tools=tools)
    assert ex.id != Example.content_id("t", msgs)  # the tools offered are part of what the example says
    assert ex.reference_tool_calls[0].function.name == "get_weather" and "get_weather" in ex.reference
    assert Example.model_validate(ex.model_dump()) == ex
    answer = Answer(example_id=ex.id, task="t", messages=ex.prompt, text="", tool_calls=turn.tool_calls)
    assert Answer.model_validate_json(answer.model_dump_json()).tool_calls == turn.tool_calls


@pytest.mark.parametrize(
    "bad",
    [{"role": "user"}, {"role": "assistant"}, {"role": "user", "content": "x", "tool_calls": [{"id": "a", "function": {"name": "f"}}]}],
)
def test_content_may_be_missing_only_beside_tool_calls(bad: dict) -> None:
    with pytest.raises(ValidationError):
        Message.model_validate(bad)
