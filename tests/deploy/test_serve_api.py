"""`llamaduo serve` over a tiny model, exercised with the real `openai` client and raw HTTP."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.deploy.conftest import SERVE_KEY

VERDICT = {
    "type": "object",
    "properties": {"verdict": {"enum": ["yes", "no"]}, "ok": {"type": "boolean"}},
    "required": ["verdict", "ok"],
}


@pytest.fixture(scope="module")
def client(serve_url):
    return openai.OpenAI(base_url=f"{serve_url}/v1", api_key=SERVE_KEY, max_retries=0)


def test_chat_non_streaming_reports_usage(client):
    reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=5, temperature=0)
    assert reply.object == "chat.completion"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 5
    # The prompt is the model's own template: 3 framing tokens plus the text, never a made-up count.
    assert reply.usage.prompt_tokens > 3


def test_chat_streaming_matches_non_streaming_and_sends_usage(client):
    msgs = [{"role": "user", "content": "Summarize the text."}]
    full = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=8, temperature=0)
    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=msgs, max_tokens=8, temperature=0, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 8
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]


def test_json_schema_is_enforced(client):
    reply = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Is it positive? Answer in JSON."}],
        max_tokens=64,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "verdict", "schema": VERDICT, "strict": True}},
    )
    data = json.loads(reply.choices[0].message.content)
    assert data["verdict"] in ("yes", "no") and isinstance(data["ok"], bool)
    assert reply.choices[0].finish_reason == "stop"


def test_completions_and_models(client):
    done = client.completions.create(model="tiny", prompt="The quick brown", max_tokens=4, temperature=0)
    assert done.object == "text_completion" and done.usage.completion_tokens == 4
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_wrong_or_missing_key_is_401(serve_url):
    bad = openai.OpenAI(base_url=f"{serve_url}/v1", api_key="sk-wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        bad.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert err.value.body["code"] == "invalid_api_key"
    r = httpx.post(f"{serve_url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_request_error"
    assert "sk-wrong-key" not in r.text


def test_bad_requests_get_openai_errors_and_server_survives(serve_url, client):
    auth = {"Authorization": f"Bearer {SERVE_KEY}"}
    url = f"{serve_url}/v1/chat/completions"
    oversized = httpx.post(url, content=b'{"messages": "' + b"x" * 10_000 + b'"}', headers=auth)
    assert oversized.status_code == 413 and oversized.json()["error"]["code"] == "request_too_large"
    malformed = httpx.post(url, content=b"{not json", headers=auth)
    assert malformed.status_code == 400 and "not valid JSON" in malformed.json()["error"]["message"]
    wrong_shape = httpx.post(url, json={"messages": [{"role": "wizard", "content": "x"}]}, headers=auth)
    assert wrong_shape.status_code == 400 and wrong_shape.json()["error"]["param"].startswith("messages")
    too_many = httpx.post(url, json={"messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}, headers=auth)
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "fox " * 300}], max_tokens=2)
    assert err.value.body["code"] == "context_length_exceeded"
    # Still serving after all of that.
    assert client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=1).choices


def test_stop_strings_cut_the_answer(client):
    free = client.completions.create(model="tiny", prompt="hello", max_tokens=12, temperature=0).choices[0].text
    assert len(free) >= 2
    stop = free[1:3]
    cut = client.completions.create(model="tiny", prompt="hello", max_tokens=12, temperature=0, stop=[stop]).choices[0]
    assert cut.text == free[: free.index(stop)] and cut.finish_reason == "stop"


def test_health_and_metrics(serve_url, client):
    client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    assert httpx.get(f"{serve_url}/health").json()["status"] == "ok"
    text = httpx.get(f"{serve_url}/metrics").text
    assert 'llamaduo_serve_requests_total{path="/v1/chat/completions",status="200"}' in text
    assert "llamaduo_serve_completion_tokens_total" in text


def test_llamaduo_service_layer_uses_serve_as_its_service_llm(serve_url, tmp_path, monkeypatch):
    """The demo's stand-in service LLM: llamaduo's own client (provider openai + base_url) gets schema-valid JSON."""
    from pydantic import BaseModel

    from llamaduo.config import load_config
    from llamaduo.service import open_service, run_sync

    class Verdict(BaseModel):
        verdict: bool

    monkeypatch.setenv("STANDIN_KEY", SERVE_KEY)
    role = {"provider": "openai", "model": "tiny", "base_url": f"{serve_url}/v1", "api_key_env": "STANDIN_KEY",
            "params": {"temperature": 0, "max_tokens": 32}, "limits": {"max_retries": 0}}
    config = load_config(data={"project": {"workdir": str(tmp_path)}, "service": {"generator": role, "judge": [role], "cache": False}})
    client = open_service(config, "judge")
    result = run_sync(client.chat([{"role": "user", "content": "Is the answer correct?"}], schema=Verdict))
    assert isinstance(result.parsed, Verdict)
    assert result.usage.output_tokens > 0


def test_concurrency_queue_refuses_past_its_size_and_times_out_waiters():
    import asyncio
    import time

    from llamaduo.deploy.protocol import ApiError
    from llamaduo.deploy.server import Slots

    async def scenario():
        slots = Slots(concurrency=1, queue_size=1)
        await slots.acquire(time.monotonic() + 5)
        waiter = asyncio.create_task(slots.acquire(time.monotonic() + 5))  # queues behind the running one
        await asyncio.sleep(0)
        with pytest.raises(ApiError) as full:
            await slots.acquire(time.monotonic() + 5)
        assert full.value.status == 429 and full.value.code == "queue_full"
        slots.release()
        await waiter  # the queued request got the slot once it was released
        with pytest.raises(ApiError) as late:
            await slots.acquire(time.monotonic() + 0.01)
        assert late.value.status == 503 and late.value.code == "timeout"

    asyncio.run(scenario())
