"""The gateway captures tool calls and JSON-mode replies whole and as sent, streamed or not.

The service is the fake provider, which streams tool calls as OpenAI does (an id and name, then argument fragments);
in local mode it is `llamaduo serve` itself over a tiny model.
"""

from __future__ import annotations

import json

import pytest

from tests.deploy.conftest import SERVE_KEY
from tests.deploy.test_gateway import gw_client, start_gateway
from tests.fakes import ToolCalls

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}}},
]
CALLS = [("get_weather", {"city": "Saint-Étienne-de-Tinée", "days": 3}), ("get_time", {"zone": "Europe/Paris"})]
ASK = [{"role": "user", "content": "Weather in Saint-Étienne-de-Tinée, and the time?"}]


def test_streamed_tool_calls_are_captured_whole_and_ingest_as_calls(tmp_path, monkeypatch, fake_service):
    from llamaduo.config import load_config
    from llamaduo.data.ingestion import ingest
    from llamaduo.data.store import DatasetStore

    fake_service.enqueue(ToolCalls(CALLS, content="Let me look."))
    server, store = start_gateway(tmp_path, monkeypatch, "capture", fake_service.openai_base_url)
    try:
        stream = gw_client(server).chat.completions.create(
            model="gpt-4o", messages=ASK, tools=TOOLS, stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        fragments = [tc.function.arguments for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
        assert len(fragments) > 2 * len(CALLS)  # the calls really arrived in pieces
        (row,) = store.rows()
    finally:
        server.stop()
    message = row["response"]["choices"][0]["message"]
    assert message["content"] == "Let me look." and row["response"]["choices"][0]["finish_reason"] == "tool_calls"
    sent = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls and c.choices[0].delta.tool_calls[0].id]
    assert [(c["id"], c["type"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message["tool_calls"]] == [
        (s.id, "function", name, args) for s, (name, args) in zip(sent, CALLS, strict=True)]
    assert row["response"]["usage"]["completion_tokens"] > 0
    assert row["request"]["tools"] == TOOLS and "stream" not in row["request"]

    log = tmp_path / "captured.jsonl"
    assert store.export_jsonl(log) == 1
    store.close()
    config = load_config(data={"project": {"workdir": str(tmp_path / "project")}})
    assert ingest(config, [str(log)], task="tools").kept == 1
    (example,) = DatasetStore(config.path(config.data.store)).examples("raw")
    answer = example.messages[-1]
    assert [(c.function.name, json.loads(c.function.arguments)) for c in answer.tool_calls] == CALLS
    assert [t["function"]["name"] for t in example.tools] == ["get_weather", "get_time"]


@pytest.mark.parametrize("stream", [False, True])
def test_json_mode_replies_are_captured_as_sent(tmp_path, monkeypatch, fake_service, stream):
    odd = '{"b":  1,\n "a": [1,2],   "é": "\\u00e9"}'  # spacing, key order and escapes a re-serialisation would change
    fake_service.enqueue(odd)
    server, store = start_gateway(tmp_path, monkeypatch, "capture", fake_service.openai_base_url)
    try:
        reply = gw_client(server).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "JSON please"}], response_format={"type": "json_object"}, stream=stream)
        got = "".join(c.choices[0].delta.content or "" for c in reply if c.choices) if stream else reply.choices[0].message.content
        assert got == odd
        (row,) = store.rows()
        assert row["response"]["choices"][0]["message"]["content"] == odd
        assert row["request"]["response_format"] == {"type": "json_object"}
    finally:
        server.stop()
        store.close()


def test_local_mode_streams_serves_tool_calls_and_captures_them(tmp_path, monkeypatch, fake_service):
    """The application streams a forced call from `llamaduo serve` through the gateway; the capture holds it whole."""
    from llamaduo.deploy.config import ServeConfig
    from llamaduo.deploy.server import create_app
    from llamaduo.deploy.serving import BackgroundServer
    from llamaduo.infer.engines import EngineSpec, open_engine
    from tests.deploy.tiny_model import build_tiny_chat_model

    model = build_tiny_chat_model(tmp_path / "model", context=2048)
    engine = open_engine(EngineSpec(kind="transformers", model=str(model), model_id="tiny", precision="fp32"))
    local = BackgroundServer(create_app(engine, ServeConfig(max_tokens=64, max_body_bytes=65536), {SERVE_KEY: "gw"})).start()
    server, store = start_gateway(tmp_path / "gw", monkeypatch, "local", fake_service.openai_base_url, f"{local.url}/v1")
    try:
        # A bounded string: a random model never closes an unbounded one before max_tokens (then finish_reason is length).
        clock = {"type": "function", "function": {"name": "get_time", "parameters": {
            "type": "object", "properties": {"zone": {"type": "string", "maxLength": 6}}, "required": ["zone"]}}}
        forced = {"type": "function", "function": {"name": "get_time"}}
        raw = gw_client(server).chat.completions.with_raw_response.create(
            model="tiny", messages=ASK, tools=[TOOLS[0], clock], tool_choice=forced, stream=True, temperature=1, seed=7, max_tokens=40)
        assert raw.headers["x-llamaduo-answered-by"] == "local"
        args = "".join(tc.function.arguments or "" for c in raw.parse() if c.choices for tc in c.choices[0].delta.tool_calls or [])
        (row,) = store.rows()
        (call,) = row["response"]["choices"][0]["message"]["tool_calls"]
        assert call["function"]["name"] == "get_time" and call["function"]["arguments"] == args
        assert isinstance(json.loads(args), dict) and row["response"]["choices"][0]["finish_reason"] == "tool_calls"
        assert fake_service.count("openai.chat") == 0
    finally:
        server.stop()
        local.stop()
        store.close()


def test_an_error_in_the_stream_is_not_captured_as_an_answer():
    from llamaduo.deploy.sse import assemble_stream

    head = b'data: {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "par"}}]}\n\n'
    assert assemble_stream(head + b'data: {"error": {"message": "engine crashed"}}\n\n') is None
    assert assemble_stream(b"data: [DONE]\n\n") is None
    whole = assemble_stream(head + b"data: [DONE]\n\n")
    assert whole["choices"][0]["message"] == {"role": "assistant", "content": "par"} and whole["object"] == "chat.completion"
