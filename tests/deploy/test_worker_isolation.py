"""Crash isolation of `serve`: the engine runs in a worker process; a SIGKILL, SIGSEGV or hang ends only the worker.

Requests in flight get 503 (in-band for a stream), /health says so, the worker comes back after a backoff, /metrics
counts crashes and restarts, and the next request is answered.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import openai
import pytest

SLOW = "tests.deploy.slow_engine:SlowEngine"


def worker_engine(model, **options):
    from llamaduo.infer.engines import EngineSpec
    from llamaduo.infer.engines.worker import WorkerEngine

    hang = options.pop("hang_timeout_s", 60.0)
    spec = EngineSpec(kind=SLOW, model=str(model), model_id="tiny", precision="fp32", options={"ignore_eos": True, **options})
    return WorkerEngine(spec, hang_timeout_s=hang, backoff_s=0.1)


def serve_app(engine):
    from llamaduo.deploy.config import ServeConfig
    from llamaduo.deploy.server import create_app
    from llamaduo.deploy.serving import BackgroundServer

    return BackgroundServer(create_app(engine, ServeConfig(max_tokens=400, concurrency=1, timeout_s=60))).start()


def wait_until(predicate, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def metric(url, name):
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


@pytest.fixture()
def served(tiny_model):
    engine = worker_engine(tiny_model, token_delay_s=0.05)
    server = serve_app(engine)
    yield engine, server
    server.stop()
    engine.close()


MSGS = [{"role": "user", "content": "Write a long story."}]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV])
def test_a_crash_mid_generation_answers_503_and_the_worker_comes_back(served, sig):
    engine, server = served
    first_pid = engine.describe()["worker_pid"]
    result = {}

    def ask():
        result["reply"] = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "tiny", "messages": MSGS, "max_tokens": 300}, timeout=60)

    thread = threading.Thread(target=ask)
    thread.start()
    assert wait_until(lambda: engine._pending, 30)  # the generation has reached the worker
    time.sleep(0.5)  # and produced some tokens (300 tokens take 15 s)
    os.kill(first_pid, sig)
    thread.join(30)
    reply = result["reply"]
    assert reply.status_code == 503, reply.text
    assert reply.json()["error"]["code"] == "engine_restarting"
    assert f"killed by {sig.name}" in reply.json()["error"]["message"]
    # While it restarts the server stays up and says so; then it answers again.
    assert wait_until(lambda: httpx.get(f"{server.url}/health").status_code == 200)
    health = httpx.get(f"{server.url}/health").json()
    assert health["worker_pid"] != first_pid and health["crashes"] == 1 and health["restarts"] == 1
    assert metric(server.url, "llamaduo_serve_engine_crashes_total") == 1.0
    assert metric(server.url, "llamaduo_serve_engine_restarts_total") == 1.0
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    again = client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=3, temperature=0)
    assert again.usage.completion_tokens == 3


def test_a_stream_reports_the_crash_in_band_and_new_requests_get_503_until_restarted(served):
    engine, server = served
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=300, temperature=0, stream=True)
    events = iter(stream)
    next(events)  # the role chunk
    next(events)  # a first token: the worker is mid-generation
    os.kill(engine.describe()["worker_pid"], signal.SIGSEGV)
    with pytest.raises(openai.APIError) as err:
        for _ in events:
            pass
    assert "restarted" in str(err.value)
    assert wait_until(lambda: not engine.ready, 10)
    refused = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "tiny", "messages": MSGS, "max_tokens": 2})
    if not engine.ready:  # the restart may already be done on a fast machine
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "engine_restarting"
    assert wait_until(lambda: engine.ready)
    assert client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=2).usage.completion_tokens == 2


def test_a_hung_worker_is_killed_and_restarted(tiny_model):
    engine = worker_engine(tiny_model, token_delay_s=30.0, hang_timeout_s=1.5)
    server = serve_app(engine)
    try:
        started = time.monotonic()
        reply = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "tiny", "messages": MSGS, "max_tokens": 5}, timeout=60)
        assert reply.status_code == 503 and "SIGKILL" in reply.json()["error"]["message"]
        assert time.monotonic() - started < 25  # not the 30 s the token would have taken
        assert wait_until(lambda: engine.ready)
        assert engine.crashes == 1 and engine.restarts == 1
    finally:
        server.stop()
        engine.close()


def test_a_model_that_cannot_load_fails_in_one_line(tmp_path):
    from llamaduo.errors import LlamaduoError
    from llamaduo.infer.engines import EngineSpec
    from llamaduo.infer.engines.worker import WorkerEngine

    with pytest.raises(LlamaduoError) as err:
        WorkerEngine(EngineSpec(kind="transformers", model=str(tmp_path / "missing-model")))
    assert "\n" not in str(err.value) and "missing-model" in str(err.value)


def test_the_gateway_in_local_mode_falls_back_while_the_worker_restarts(served, tmp_path, monkeypatch, fake_service):
    from tests.deploy.test_gateway import gw_client, start_gateway

    engine, local = served
    gateway, store = start_gateway(tmp_path, monkeypatch, "local", fake_service.openai_base_url, f"{local.url}/v1")
    try:
        client = gw_client(gateway)
        result = {}

        def ask():
            result["reply"] = client.chat.completions.with_raw_response.create(model="tiny", messages=MSGS, max_tokens=200)

        thread = threading.Thread(target=ask)
        thread.start()
        assert wait_until(lambda: engine._pending, 30)
        time.sleep(0.3)
        os.kill(engine.describe()["worker_pid"], signal.SIGSEGV)
        thread.join(60)
        reply = result["reply"]  # no client error: the service answered instead
        assert reply.headers["x-llamaduo-answered-by"] == "service"
        assert reply.headers["x-llamaduo-fallback-reason"] == "local answered HTTP 503"
        assert reply.parse().choices[0].message.content
        assert wait_until(lambda: engine.ready)
        after = client.chat.completions.with_raw_response.create(model="tiny", messages=MSGS, max_tokens=2)
        assert after.headers["x-llamaduo-answered-by"] == "local"
    finally:
        gateway.stop()
        store.close()
