"""The capture store on SQLite and on a real PostgreSQL server, plus PII redaction."""

from __future__ import annotations

import json

import pytest

from llamaduo.deploy.capture import CaptureStore, resolve_store_url
from llamaduo.deploy.redact import redact_text
from tests.deploy.postgres import postgres_server

REQUEST = {"model": "m", "messages": [{"role": "user", "content": "Summarize: the sky is blue."}]}
RESPONSE = {"object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Blue sky."}, "finish_reason": "stop"}]}


def exercise(store: CaptureStore, tmp_path) -> None:
    first = store.add(client="app", mode="capture", answered_by="service", model="m", request=REQUEST, response=RESPONSE, status=200, latency_ms=3.0)
    second = store.add(client="app", mode="capture", answered_by="service", model="m", request=REQUEST, response=RESPONSE, status=200, latency_ms=4.0)
    assert store.feedback(first, True, "good") and store.feedback(second, False)
    assert not store.feedback("missing-id", True)
    store.set_local(second, {"choices": []}, 12.5)
    out = tmp_path / "log.jsonl"
    assert store.export_jsonl(out, only_satisfactory=True) == 1
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["request"] == REQUEST and row["response"] == RESPONSE and row["satisfactory"] is True
    assert store.export_jsonl(out) == 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["satisfactory"] for r in rows] == [True, False] and rows[1]["metadata"]["local_response"] == {"choices": []}


def test_sqlite_store_round_trip(tmp_path):
    store = CaptureStore(resolve_store_url("sqlite:///nested/cap.sqlite", tmp_path))
    assert (tmp_path / "nested").is_dir()
    exercise(store, tmp_path)
    store.close()


def test_postgresql_store_shared_by_two_replicas(tmp_path):
    try:
        server = postgres_server(tmp_path)
        url = server.__enter__()
    except RuntimeError as exc:
        pytest.skip(f"PostgreSQL could not be started: {exc}")
    try:
        exercise(CaptureStore(url), tmp_path)
        # A second replica sees the first one's rows and feedback.
        replica = CaptureStore(url)
        assert len(replica.rows()) == 2 and len(replica.rows(only_satisfactory=True)) == 1
        replica.close()
    finally:
        server.__exit__(None, None, None)


def test_bad_store_url_is_one_line_error():
    from llamaduo.errors import LlamaduoError

    with pytest.raises(LlamaduoError, match="store_url"):
        CaptureStore("nosuchdialect://x")


def test_redaction_covers_emails_phones_and_keys_but_not_plain_numbers():
    text = "Write to jane.doe@corp.io, call (415) 555-0134 or +44 20 7946 0958; token sk-proj-AbCdEfGhIjKlMnOp12 in 2024, 3 items."
    out = redact_text(text)
    assert "jane.doe" not in out and "555-0134" not in out and "7946" not in out and "AbCdEf" not in out
    assert out.count("[EMAIL]") == 1 and out.count("[PHONE]") == 2 and out.count("[KEY]") == 1
    assert "2024" in out and "3 items" in out
