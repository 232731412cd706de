"""`llamaduo serve` refuses malformed requests with an OpenAI-shaped 400 before any generation runs."""

from __future__ import annotations

import re

import httpx
import openai
import pytest

from llamaduo.deploy import protocol as p
from tests.deploy.conftest import SERVE_KEY

AUTH = {"Authorization": f"Bearer {SERVE_KEY}"}
HI = [{"role": "user", "content": "hi"}]


def completion_tokens(serve_url: str) -> float:
    """The server's running count of generated tokens: unchanged means no generation ran."""
    text = httpx.get(f"{serve_url}/metrics").text
    return sum(float(v) for v in re.findall(r"^llamaduo_serve_completion_tokens_total(?:\{[^}]*\})? (\S+)$", text, re.M))


BAD_CHAT = [
    ({"messages": [{"role": "user"}]}, "messages.0.content", "needs content"),
    ({"messages": [{"role": "user", "content": None}]}, "messages.0.content", "needs content"),
    ({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": []}]}, "messages.1.content", "needs content"),
    ({"messages": HI, "max_tokens": 65}, "max_tokens", "limit of 64"),
    ({"messages": HI, "max_completion_tokens": 1000}, "max_tokens", "limit of 64"),
    ({"messages": HI, "stop": 42}, "stop", "expected a string or a list of strings, got a number"),
    ({"messages": HI, "stop": [1]}, "stop", "got an array holding a number"),
    ({"messages": HI, "logit_bias": "no"}, "logit_bias", "valid dictionary"),
    ({"messages": HI, "temperature": "0.5"}, "temperature", "valid number"),
    ({"messages": HI, "stream": "yes"}, "stream", "valid boolean"),
    ({"messages": HI, "max_tokens": 5.5}, "max_tokens", "valid integer"),
    ({"messages": [{"role": "user", "content": 7}]}, "messages.0.content", "got a number"),
    # Known fields the engines cannot honour are refused rather than silently dropped.
    ({"messages": HI, "logit_bias": {"42": -100}}, "logit_bias", "not supported"),
    ({"messages": HI, "logprobs": True}, "logprobs", "not supported"),
    ({"messages": HI, "presence_penalty": 0.5}, "presence_penalty", "not supported"),
]


@pytest.mark.parametrize(("body", "param", "says"), BAD_CHAT, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD_CHAT)])
def test_bad_chat_requests_get_400_without_generating(serve_url, body, param, says):
    before = completion_tokens(serve_url)
    for stream in (False, True):
        reply = httpx.post(f"{serve_url}/v1/chat/completions", json={**body, "stream": body.get("stream", stream)}, headers=AUTH)
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error" and error["param"] == param
        assert says in error["message"]
    assert completion_tokens(serve_url) == before


def test_bad_completion_requests_get_400_without_generating(serve_url):
    before = completion_tokens(serve_url)
    url = f"{serve_url}/v1/completions"
    for body, param in [({"prompt": "x", "max_tokens": 65}, "max_tokens"), ({"prompt": "x", "stop": 42}, "stop"),
                        ({"prompt": 5}, "prompt"), ({"prompt": "x", "echo": True}, "echo"), ({"prompt": "x", "logit_bias": "no"}, "logit_bias")]:
        reply = httpx.post(url, json=body, headers=AUTH)
        assert reply.status_code == 400 and reply.json()["error"]["param"] == param, reply.text
    assert completion_tokens(serve_url) == before


def test_openai_client_sees_bad_request_error(serve_url):
    client = openai.OpenAI(base_url=f"{serve_url}/v1", api_key=SERVE_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=HI, max_tokens=2, stop=42)  # type: ignore[arg-type]
    assert err.value.body["param"] == "stop"
    # Defaults that change nothing are accepted, as from any OpenAI client; an assistant turn may lack content.
    ok = client.chat.completions.create(
        model="tiny", max_tokens=2, temperature=0, logit_bias={}, presence_penalty=0, frequency_penalty=0, logprobs=False, user="u1",
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}, {"role": "user", "content": "again"}],
    )
    assert ok.usage.completion_tokens == 2


def test_parse_body_names_the_field_and_drops_union_tags():
    with pytest.raises(p.ApiError) as err:
        p.parse_body(b'{"messages": [{"role": "user", "content": "x"}], "stop": {"a": 1}}', p.ChatRequest)
    assert err.value.param == "stop" and err.value.message == "stop: expected a string or a list of strings, got an object"
    with pytest.raises(p.ApiError) as err:
        p.parse_body(b'{"prompt": ["a", "b"]}', p.CompletionRequest)
    assert err.value.message == "prompt: send one prompt per request"
    assert p.parse_body(b'{"prompt": [1, 2], "best_of": 1}', p.CompletionRequest).prompt == [1, 2]
