"""Function-calling data: OpenAI logs, fine-tuning JSONL with `tools`, ShareGPT variants; stats and gates see the calls."""

from __future__ import annotations

import json

from llamaduo.data import DatasetStore, dataset_stats, ingest
from llamaduo.data.config import DataConfig
from llamaduo.data.hygiene import PairFilter
from llamaduo.records import Example, Message
from tests.data.factory import project_config, write_jsonl

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
BARE_TIME = {"name": "get_time", "description": "Local time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}


def _ingest(tmp_path, rows, name="t.jsonl", **kw):
    config = project_config(tmp_path)
    report = ingest(config, [str(write_jsonl(tmp_path / name, rows))], task="tools", **kw)
    return report, DatasetStore(config.path("data")).examples("raw")


def _call(call_id, name, arguments):
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def test_openai_logs_keep_tool_calls_results_and_the_tools_offered(tmp_path):
    ask = {"role": "user", "content": "Weather in Paris?"}
    call_only = {
        "request": {"model": "gpt-4o", "messages": [ask], "tools": [WEATHER], "tool_choice": "auto"},
        "response": {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [_call("call_a", "get_weather", {"city": "Paris"})]}, "finish_reason": "tool_calls"}]},
    }
    after_result = {
        "request": {
            "messages": [ask, {"role": "assistant", "content": None, "tool_calls": [_call("call_a", "get_weather", {"city": "Paris"})]}, {"role": "tool", "tool_call_id": "call_a", "content": '{"temp": 21}'}],
            "tools": [WEATHER],
        },
        "response": {"choices": [{"message": {"role": "assistant", "content": "It is 21 degrees in Paris."}, "finish_reason": "stop"}]},
    }
    legacy = {
        "request": {"messages": [{"role": "user", "content": "Time in Tokyo?"}], "functions": [BARE_TIME]},
        "response": {"choices": [{"message": {"role": "assistant", "content": None, "function_call": {"name": "get_time", "arguments": '{"tz": "Asia/Tokyo"}'}}, "finish_reason": "function_call"}]},
    }
    report, stored = _ingest(tmp_path, [call_only, after_result, legacy])
    assert report.kept == 3 and report.dropped == {}
    first, second, third = stored
    assert first.tools == [WEATHER] and first.reference_tool_calls[0].function.name == "get_weather"
    assert first.messages[-1].content is None and json.loads(first.reference_tool_calls[0].function.arguments) == {"city": "Paris"}
    assert [m.role for m in second.messages] == ["user", "assistant", "tool", "assistant"]
    assert second.messages[2].tool_call_id == "call_a" and second.reference == "It is 21 degrees in Paris." and second.reference_tool_calls is None
    assert third.tools == [{"type": "function", "function": BARE_TIME}] and third.reference_tool_calls[0].id == "call_1_0"
    assert first.id == Example.content_id("tools", first.messages, first.tools) != Example.content_id("tools", first.messages)


def test_fine_tuning_jsonl_with_tools_and_parallel_calls(tmp_path):
    row = {
        "messages": [
            {"role": "system", "content": "You help travellers."},
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "tool_calls": [_call("c1", "get_weather", {"city": "Paris"}), _call("c2", "get_weather", {"city": "Rome"})]},
        ],
        "tools": [WEATHER],
        "parallel_tool_calls": True,
    }
    no_call = {"messages": [{"role": "user", "content": "Thanks!"}, {"role": "assistant", "content": "You're welcome."}], "tools": [WEATHER]}
    bad_args = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": "{city: Paris"}}]}], "tools": [WEATHER]}
    orphan = {"messages": [{"role": "user", "content": "y"}, {"role": "tool", "content": "z"}, {"role": "assistant", "content": "w"}]}
    report, stored = _ingest(tmp_path, [row, no_call, bad_args, orphan])
    assert report.sources[0].layout == "chat" and report.kept == 2
    assert report.dropped == {"bad_tool_call": 1, "orphan_tool_result": 1}
    calls = stored[0].reference_tool_calls
    assert [json.loads(c.function.arguments)["city"] for c in calls] == ["Paris", "Rome"] and [c.id for c in calls] == ["c1", "c2"]
    assert stored[1].tools == [WEATHER] and stored[1].reference_tool_calls is None  # deciding not to call is data too


def test_sharegpt_function_call_variants(tmp_path):
    llama_factory = {
        "conversations": [
            {"from": "human", "value": "Weather in Oslo?"},
            {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": "Oslo"}})},
            {"from": "observation", "value": json.dumps({"temp": -3})},
            {"from": "gpt", "value": "It is -3 degrees in Oslo."},
        ],
        "tools": json.dumps([BARE_TIME, WEATHER["function"]]),
        "system": "Be brief.",
    }
    system = "You are a function calling AI model. <tools> " + json.dumps(WEATHER) + " </tools> Use <tool_call> tags."
    hermes = {
        "conversations": [
            {"from": "system", "value": system},
            {"from": "human", "value": "Weather in Lima?"},
            {"from": "gpt", "value": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Lima"}}\n</tool_call>'},
            {"from": "tool", "value": '<tool_response>\n{"temp": 18}\n</tool_response>'},
            {"from": "gpt", "value": "18 degrees in Lima."},
        ]
    }
    report, (lf, hm) = _ingest(tmp_path, [llama_factory, hermes])
    assert report.sources[0].layout == "sharegpt" and report.kept == 2
    assert [m.role for m in lf.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert [t["function"]["name"] for t in lf.tools] == ["get_time", "get_weather"]
    assert lf.messages[3].tool_call_id == lf.messages[2].tool_calls[0].id and lf.messages[3].content == '{"temp": -3}'
    assert [m.role for m in hm.messages] == ["user", "assistant", "tool", "assistant"]  # the protocol system turn becomes `tools`
    assert hm.tools == [WEATHER] and hm.messages[1].tool_calls[0].function.name == "get_weather" and hm.messages[2].content == '{"temp": 18}'


def test_store_round_trip_and_stats_count_calls(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": f"Weather in {city}?"}, {"role": "assistant", "tool_calls": [_call("c", "get_weather", {"city": city})]}], "tools": [WEATHER]}
        for city in ("Paris", "Rome", "Oslo")
    ] + [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, how can I help?"}]}]
    config = project_config(tmp_path)
    ingest(config, [str(write_jsonl(tmp_path / "t.jsonl", rows))], task="tools")
    stored = DatasetStore(config.path("data")).examples("raw")
    again = ingest(config, [str(write_jsonl(tmp_path / "t.jsonl", rows))], task="tools")
    assert again.added == 0  # the same rows read back from Parquet hash to the same ids
    assert [e.model_dump() for e in stored] == [e.model_dump() for e in DatasetStore(config.path("data")).examples("raw")]
    assert stored[3].tools is None and "tools" not in stored[3].model_dump()
    stats = dataset_stats(config).splits["raw"].tasks["tools"]
    assert (stats.rows, stats.with_tools, stats.tool_answers, stats.functions) == (4, 3, 3, {"get_weather": 3})
    assert stats.answer_tokens.max > 5  # the calls are counted as answer text, not as empty answers


def _tool_pair(prompt: str, city: str, key_order: tuple[str, ...] = ("city", "unit")) -> Example:
    args = {k: {"city": city, "unit": "celsius"}[k] for k in key_order}
    messages = [Message(role="user", content=prompt), Message(role="assistant", tool_calls=[_call("c", "get_weather", args)])]
    return Example(id=Example.content_id("t", messages, [WEATHER]), task="t", messages=messages, tools=[WEATHER])


def test_gates_treat_tool_calls_as_content():
    prompt = "I am flying out tomorrow morning, what weather should I pack for at my destination city please"
    paris, lima, paris_reordered = _tool_pair(prompt, "Paris"), _tool_pair(prompt, "Lima"), _tool_pair(prompt, "Paris", ("unit", "city"))
    verdicts = PairFilter(DataConfig(near_dup_threshold=0.95)).screen([paris, lima, paris_reordered])
    assert verdicts[0] is None and verdicts[1] is None  # same prompt, different call: not a duplicate
    assert verdicts[2].reason == "duplicate" and verdicts[2].other == paris.id  # the same call with its keys reordered is
    leaky = PairFilter(DataConfig(), test=[paris]).screen([_tool_pair("Quick question. " + prompt, "Paris")])
    assert leaky[0] is not None and leaky[0].gate == "decontamination"
