"""The online call path against the fake server: cache, sampling, retries, fail-fast, structure, budget, secrets."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from llamaduo.errors import BudgetExceeded, LlamaduoError, MissingExtra
from llamaduo.runs import RunFolder
from llamaduo.service import ChatRequest, ChatResult, ServiceError, open_service, run_sync
from llamaduo.service.budget import forget_budgets
from llamaduo.service.cache import ServiceStore
from llamaduo.service.errors import StructuredOutputError
from tests.fakes import FakeServiceServer, Fault
from tests.fakes import protocols as P
from tests.fakes.fixtures import FAKE_KEY, fake_config

HELLO = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello."}]


class Sleeps:
    """An injected sleep: records the delays the client asked for and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


class Verdict(BaseModel):
    score: int
    reason: str


@pytest.fixture(autouse=True)
def _fresh_budgets() -> None:
    forget_budgets()


def chat(config: Any, messages: list[dict[str, str]] = HELLO, role: str = "generator", **kwargs: Any) -> tuple[ChatResult, Any]:
    sleeps = Sleeps()

    async def main() -> tuple[ChatResult, Any]:
        async with open_service(config, role, sleep=sleeps) as client:
            return await client.chat(messages, **kwargs), client

    result, client = asyncio.run(main())
    client.sleeps = sleeps
    return result, client


def test_rerun_sends_nothing_and_costs_nothing(fake_service: FakeServiceServer, service_config: Any) -> None:
    first, _ = chat(service_config, stage="synth")
    assert first.text == "reply to: Say hello." and not first.cache_hit and first.cost_usd > 0
    assert first.usage.input_tokens > 0 and first.usage.output_tokens > 0
    again, client = chat(service_config, stage="synth")
    assert fake_service.count("openai.chat") == 1
    assert again.cache_hit and again.cost_usd == 0 and again.text == first.text
    assert client.stats["requests"] == 0 and client.stats["cache_hits"] == 1
    sent = fake_service.received("openai.chat")[0]
    assert sent.headers["authorization"] == f"Bearer {FAKE_KEY}"
    assert sent.json["messages"] == HELLO and sent.json["max_tokens"] == 1024


def test_cache_off_asks_again_and_keeps_nothing(fake_service: FakeServiceServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SERVICE_KEY", FAKE_KEY)
    config = fake_config(fake_service, tmp_path, cache=False)
    chat(config)
    again, _ = chat(config)
    assert fake_service.count("openai.chat") == 2 and not again.cache_hit
    from llamaduo.service.cache import ServiceStore

    store = ServiceStore(config.path(config.service.cache_path))
    assert store.stats()["entries"] == 0 and store.total_cost() > 0
    store.close()


def test_params_and_sample_index_are_part_of_the_key(fake_service: FakeServiceServer, service_config: Any) -> None:
    chat(service_config)
    chat(service_config, params={"temperature": 0.7})
    chat(service_config, sample=1)
    chat(service_config, params={"temperature": 0.7})
    assert fake_service.count("openai.chat") == 3
    assert fake_service.received("openai.chat")[1].json["temperature"] == 0.7


def test_n_samples_are_one_request_billed_once(fake_service: FakeServiceServer, service_config: Any) -> None:
    async def main() -> tuple[list[ChatResult], ChatResult]:
        async with open_service(service_config, "judge") as client:
            one = await client.chat(HELLO, params={"temperature": 0.0})
            return await client.chat_samples(HELLO, n=5, params={"temperature": 1.0}), one

    samples, one = asyncio.run(main())
    assert fake_service.count("openai.chat") == 2
    assert fake_service.received("openai.chat")[1].json["n"] == 5
    assert [s.sample for s in samples] == [0, 1, 2, 3, 4] and len({s.text for s in samples}) == 5
    assert sum(s.usage.input_tokens for s in samples) == one.usage.input_tokens
    # The samples are cached one by one: asking for 7 now sends only the 2 missing ones, in one request.
    more = run_sync(_samples(service_config, 7))
    assert fake_service.count("openai.chat") == 3 and fake_service.received("openai.chat")[2].json["n"] == 2
    assert [s.cache_hit for s in more] == [True] * 5 + [False] * 2


async def _samples(config: Any, n: int) -> list[ChatResult]:
    async with open_service(config, "judge") as client:
        return await client.chat_samples(HELLO, n=n, params={"temperature": 1.0})


def test_server_ignoring_n_gets_the_rest_one_by_one(fake_service: FakeServiceServer, service_config: Any) -> None:
    fake_service.honour_n = False
    samples = run_sync(_samples(service_config, 3))
    assert [s.sample for s in samples] == [0, 1, 2] and all(s.text for s in samples)
    assert [r.json.get("n") for r in fake_service.received("openai.chat")] == [3, None, None]
    assert len({r.json.get("seed") for r in fake_service.received("openai.chat")}) == 1  # no seed configured: none sent


def test_without_n_samples_are_distinct_requests(fake_service: FakeServiceServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SERVICE_KEY", FAKE_KEY)
    config = fake_config(fake_service, tmp_path, provider="anthropic", model="claude-haiku-4-5")
    samples = run_sync(_samples(config, 3))
    assert fake_service.count("anthropic.messages") == 3 and len(samples) == 3
    run_sync(_samples(config, 3))
    assert fake_service.count("anthropic.messages") == 3


def test_retry_after_is_honoured(fake_service: FakeServiceServer, service_config: Any) -> None:
    fake_service.enqueue(Fault.rate_limited(retry_after="7"), Fault.rate_limited(retry_after=None, retry_after_ms="1500"), Fault.error(503))
    result, client = chat(service_config)
    assert result.text == "reply to: Say hello."
    assert fake_service.count("openai.chat") == 4 and client.stats["retries"] == 3
    delays = client.sleeps.delays
    assert delays[:2] == [7.0, 1.5]
    assert 0.04 * 0.75 <= delays[2] <= 0.04  # no Retry-After on the 503: backoff base 0.01 * 2**2, with jitter


def test_retry_spacing_seen_by_the_server(fake_service: FakeServiceServer, service_config: Any) -> None:
    """With the real sleep, the retry reaches the server no sooner than Retry-After allows (a lower bound only)."""
    fake_service.enqueue(Fault.rate_limited(retry_after="0.3"))
    run_sync(_one_chat(service_config))
    first, second = fake_service.received("openai.chat")
    assert second.ts - first.ts >= 0.3


async def _one_chat(config: Any) -> ChatResult:
    async with open_service(config, "generator") as client:
        return await client.chat(HELLO)


@pytest.mark.parametrize("fault", [Fault(truncate=True), Fault(drop=True), Fault.error(500), Fault.slow(1.0)], ids=["truncated", "dropped", "500", "timeout"])
def test_transport_faults_are_retried(fake_service: FakeServiceServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: Fault) -> None:
    monkeypatch.setenv("FAKE_SERVICE_KEY", FAKE_KEY)
    config = fake_config(fake_service, tmp_path, role={"limits": {"timeout_s": 0.3, "max_retries": 2, "backoff_base_s": 0.01}})
    fake_service.enqueue(fault)
    result, client = chat(config)
    assert result.text == "reply to: Say hello."
    assert fake_service.count("openai.chat") == 2 and client.stats["retries"] == 1


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_unreachable_base_url_is_one_line_soon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, provider: str) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("FAKE_SERVICE_KEY", FAKE_KEY)
    server = FakeServiceServer()
    server._port = port
    config = fake_config(server, tmp_path, provider=provider, model="m", role={"limits": {"max_retries": 6}})
    with pytest.raises(ServiceError, match="after 3 attempts: could not connect") as info:
        chat(config)
    assert "base_url" in info.value.message and "\n" not in info.value.message


def test_retries_run_out(fake_service: FakeServiceServer, service_config: Any) -> None:
    fake_service.enqueue(*[Fault.error(503)] * 4)
    with pytest.raises(ServiceError, match="after 4 attempts") as info:
        chat(service_config)
    assert fake_service.count("openai.chat") == 4 and "\n" not in info.value.message


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_401_fails_fast_without_the_key(fake_service: FakeServiceServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, provider: str) -> None:
    secret = "sk-wrong-secret-key-9f8e7d6c5b4a"
    monkeypatch.setenv("FAKE_SERVICE_KEY", secret)
    fake_service.require_key = "sk-the-right-one-000000000000"
    config = fake_config(fake_service, tmp_path, provider=provider, model="m")
    with pytest.raises(ServiceError, match="HTTP 401") as info:
        chat(config)
    assert fake_service.count() == 1
    assert secret not in info.value.message and secret[:10] not in info.value.message
    assert "\n" not in info.value.message


def test_400_fails_fast(fake_service: FakeServiceServer, service_config: Any) -> None:
    fake_service.enqueue(Fault.error(400))
    with pytest.raises(ServiceError, match="rejected the request"):
        chat(service_config)
    assert fake_service.count("openai.chat") == 1


def test_invalid_structured_reply_gets_one_repair(fake_service: FakeServiceServer, service_config: Any) -> None:
    fake_service.enqueue('{"score": "high"}')
    result, client = chat(service_config, schema=Verdict)
    assert result.parsed == Verdict(score=50, reason="ok") and client.stats["repairs"] == 1
    first, repair = fake_service.received("openai.chat")
    assert first.json["response_format"]["json_schema"]["schema"]["required"] == ["score", "reason"]
    assert repair.json["messages"][-2] == {"role": "assistant", "content": '{"score": "high"}'}
    assert "score" in repair.json["messages"][-1]["content"] and "could not be used" in repair.json["messages"][-1]["content"]
    cached, _ = chat(service_config, schema=Verdict)
    assert cached.cache_hit and cached.parsed == result.parsed and fake_service.count("openai.chat") == 2


def test_twice_invalid_is_a_structured_output_error(fake_service: FakeServiceServer, service_config: Any) -> None:
    fake_service.enqueue("not json at all", '{"reason": "still no score"}')
    with pytest.raises(StructuredOutputError, match="invalid structured reply twice"):
        chat(service_config, schema=Verdict)
    assert fake_service.count("openai.chat") == 2
    store = ServiceStore(service_config.path(service_config.service.cache_path))
    billed = store.conn.execute("SELECT input_tokens, output_tokens FROM ledger").fetchall()
    store.close()
    assert billed and billed[0][0] > 0 and billed[0][1] == P.tokens("not json at all") + P.tokens('{"reason": "still no score"}'), (
        "both paid requests are billed, the failed repair included"
    )


def test_fenced_json_needs_no_repair(fake_service: FakeServiceServer, service_config: Any) -> None:
    fake_service.enqueue('```json\n{"score": 91, "reason": "clear"}\n```')
    result, client = chat(service_config, schema=Verdict)
    assert result.parsed.score == 91 and client.stats["repairs"] == 0


@pytest.mark.parametrize(("provider", "api"), [("anthropic", "anthropic.messages"), ("gemini", "gemini.generate")])
def test_native_schema_per_provider(fake_service: FakeServiceServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, provider: str, api: str) -> None:
    monkeypatch.setenv("FAKE_SERVICE_KEY", FAKE_KEY)
    config = fake_config(fake_service, tmp_path, provider=provider, model="claude-haiku-4-5" if provider == "anthropic" else "gemini-2.5-flash")
    result, _ = chat(config, schema=Verdict)
    assert result.parsed == Verdict(score=50, reason="ok") and result.cost_usd > 0
    body = fake_service.received(api)[0].json
    if provider == "anthropic":
        assert body["tool_choice"] == {"type": "tool", "name": "Verdict"} and body["system"] == "You are terse."
    else:
        assert body["generationConfig"]["responseMimeType"] == "application/json" and "responseJsonSchema" in body["generationConfig"]


def test_budget_stops_before_the_request(fake_service: FakeServiceServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SERVICE_KEY", FAKE_KEY)
    # gpt-4o bills $10 per million output tokens: a 1024-token reply may cost ~$0.01, above the whole budget.
    config = fake_config(fake_service, tmp_path, model="gpt-4o", budget_usd=0.0005)
    with pytest.raises(BudgetExceeded, match=r"budget") as info:
        chat(config)
    assert fake_service.count("openai.chat") == 0 and "service.budget_usd" in info.value.message
    small, _ = chat(config, params={"max_tokens": 20})  # worst case ~$0.0003: fits
    assert small.cost_usd > 0
    with pytest.raises(BudgetExceeded):  # worst case ~$0.0005 on top of what is spent: would cross
        chat(config, [{"role": "user", "content": "another question"}], params={"max_tokens": 45})
    assert fake_service.count("openai.chat") == 1
    cached, _ = chat(config, params={"max_tokens": 20})  # replies already paid for still come from the cache
    assert cached.cache_hit


def test_budget_sees_what_another_process_spends(fake_service: FakeServiceServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SERVICE_KEY", FAKE_KEY)
    config = fake_config(fake_service, tmp_path, model="gpt-4o", budget_usd=0.01)
    first, _ = chat(config, params={"max_tokens": 20})  # this process's budget now exists and is nearly untouched
    assert 0 < first.cost_usd < 0.001
    # Another process on the same project database records $0.0098 of spend while this one is still running.
    other = "from llamaduo.service.cache import ServiceStore; import sys; ServiceStore(sys.argv[1]).add_ledger({'cost_usd': 0.0098})"
    subprocess.run([sys.executable, "-c", other, str(config.path(config.service.cache_path))], check=True)
    with pytest.raises(BudgetExceeded, match=r"\$0\.0099 of the \$0\.01 budget is already spent"):
        chat(config, [{"role": "user", "content": "another question"}], params={"max_tokens": 20})
    assert fake_service.count("openai.chat") == 1


def test_chat_many_returns_item_failures(fake_service: FakeServiceServer, service_config: Any) -> None:
    fake_service.enqueue(Fault.error(400))
    requests = [ChatRequest([{"role": "user", "content": f"q{i}"}]) for i in range(4)]

    async def main() -> list[Any]:
        async with open_service(service_config, "generator") as client:
            return await client.chat_many(requests, stage="synth")

    results = asyncio.run(main())
    assert len(results) == 4 and sum(isinstance(r, ServiceError) for r in results) == 1
    assert {r.text for r in results if isinstance(r, ChatResult)} <= {f"reply to: q{i}" for i in range(4)}


def test_concurrency_limit_holds(fake_service: FakeServiceServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SERVICE_KEY", FAKE_KEY)
    fake_service.latency_s = 0.05
    config = fake_config(fake_service, tmp_path, role={"limits": {"concurrency": 3}})

    async def main() -> list[Any]:
        async with open_service(config, "generator") as client:
            return await client.chat_many([ChatRequest([{"role": "user", "content": f"q{i}"}]) for i in range(12)])

    results = asyncio.run(main())
    assert all(isinstance(r, ChatResult) for r in results)
    assert fake_service.max_in_flight == 3


def test_no_key_in_any_file_written(fake_service: FakeServiceServer, service_config: Any, tmp_path: Path) -> None:
    run = RunFolder.create(tmp_path / "runs", service_config, run_id="r1")
    fake_service.enqueue(Fault.rate_limited("0"), "not json")

    async def main() -> None:
        async with open_service(service_config, "judge", run=run) as client:
            await client.chat(HELLO, schema=Verdict, stage="evaluate")
            await client.chat_samples(HELLO, n=3, stage="evaluate")

    asyncio.run(main())
    assert run.events("service_usage")[0]["requests"] == 4
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.startswith("cache.sqlite") for p in written)
    for path in written:
        assert FAKE_KEY.encode() not in path.read_bytes(), path


def test_missing_key_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llamaduo.config import load_config

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    config = load_config(data={"project": {"workdir": str(tmp_path)}, "service": {"generator": {"provider": "anthropic", "model": "claude-haiku-4-5"}}})
    with pytest.raises(LlamaduoError, match="ANTHROPIC_API_KEY is not set") as info:
        open_service(config, "generator")
    assert "Export ANTHROPIC_API_KEY" in info.value.message


def test_local_server_needs_no_key(fake_service: FakeServiceServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAKE_SERVICE_KEY", raising=False)
    result, _ = chat(fake_config(fake_service, tmp_path))
    assert result.text and fake_service.received()[0].headers["authorization"] == "Bearer not-needed"


def test_key_file_is_read(fake_service: FakeServiceServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAKE_SERVICE_KEY", raising=False)
    (tmp_path / "key.txt").write_text("sk-from-a-file-123456789\n")
    chat(fake_config(fake_service, tmp_path, role={"api_key_file": "key.txt"}))
    assert fake_service.received()[0].headers["authorization"] == "Bearer sk-from-a-file-123456789"


def test_missing_sdk_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llamaduo.config import load_config

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-000000000")
    monkeypatch.setitem(sys.modules, "anthropic", None)  # what Python sees when the package is not installed
    config = load_config(data={"project": {"workdir": str(tmp_path)}, "service": {"generator": {"provider": "anthropic", "model": "claude-haiku-4-5"}}})
    with pytest.raises(MissingExtra, match=r"llamaduo\[anthropic\]"):
        open_service(config, "generator")
