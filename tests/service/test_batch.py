"""Batch mode: one provider job for many prompts, persisted so a crashed run resumes polling instead of paying twice."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from llamaduo.service import ChatRequest, ChatResult, open_service
from llamaduo.service.budget import forget_budgets
from llamaduo.service.cache import ServiceStore
from llamaduo.service.prices import cost_usd, find_price
from tests.fakes import FakeServiceServer
from tests.fakes.fixtures import FAKE_KEY, fake_config

REQUESTS = [ChatRequest([{"role": "user", "content": f"translate item {i}"}]) for i in range(3)]
CASES = [
    ("openai", "gpt-4o-mini", "openai.batches", "POST /v1/batches"),
    ("anthropic", "claude-haiku-4-5", "anthropic.batches", "POST /v1/messages/batches"),
]


class Crash(Exception):
    """Stands in for kill -9 while the run waits for the batch."""


async def _crash(delay: float) -> None:
    raise Crash


async def _no_wait(delay: float) -> None:
    await asyncio.sleep(0)


def run_batch(config: Any, sleep: Any = _no_wait) -> list[Any]:
    return run_batch_of(config, REQUESTS, sleep)


def run_batch_of(config: Any, requests: list[ChatRequest], sleep: Any = _no_wait) -> list[Any]:
    async def main() -> list[Any]:
        async with open_service(config, "judge", sleep=sleep, batch_poll_s=0.0) as client:
            return await client.chat_many(requests, stage="evaluate")

    return asyncio.run(main())


def submissions(server: FakeServiceServer, what: str) -> int:
    method, path = what.split()
    return sum(1 for r in server.received() if r.method == method and r.path == path)


@pytest.fixture
def batch_config(fake_service: FakeServiceServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Any:
    forget_budgets()
    monkeypatch.setenv("FAKE_SERVICE_KEY", FAKE_KEY)
    provider, model = request.param
    return fake_config(fake_service, tmp_path, provider=provider, model=model, role={"mode": "batch"})


@pytest.mark.parametrize(("batch_config", "api", "submit"), [((p, m), a, s) for p, m, a, s in CASES], indirect=["batch_config"], ids=["openai", "anthropic"])
def test_batch_fills_the_cache_at_batch_price(fake_service: FakeServiceServer, batch_config: Any, api: str, submit: str) -> None:
    results = run_batch(batch_config)
    assert [r.text for r in results] == [f"reply to: translate item {i}" for i in range(3)]
    assert submissions(fake_service, submit) == 1 and fake_service.count("openai.chat") + fake_service.count("anthropic.messages") == 0
    model = batch_config.service.judge[0].model
    full = sum(cost_usd(r.usage, find_price(model)) for r in results)
    assert sum(r.cost_usd for r in results) == pytest.approx(full / 2)
    if api == "openai.batches":
        uploaded = next(r for r in fake_service.received("openai.files") if r.method == "POST")
        assert b'"url": "/v1/chat/completions"' in uploaded.body and b"translate item 2" in uploaded.body
    before = fake_service.count()
    again = run_batch(batch_config)
    assert fake_service.count() == before and all(isinstance(r, ChatResult) and r.cache_hit for r in again)


@pytest.mark.parametrize(("batch_config", "api", "submit"), [((p, m), a, s) for p, m, a, s in CASES], indirect=["batch_config"], ids=["openai", "anthropic"])
def test_crash_while_polling_resumes_the_same_job(fake_service: FakeServiceServer, batch_config: Any, api: str, submit: str) -> None:
    fake_service.batches.polls = 2
    with pytest.raises(Crash):
        run_batch(batch_config, sleep=_crash)
    assert submissions(fake_service, submit) == 1
    store = ServiceStore(batch_config.path(batch_config.service.cache_path))
    pending = store.conn.execute("SELECT job_id, status FROM batch_jobs").fetchall()
    store.close()
    assert len(pending) == 1 and pending[0][1] == "submitted"

    results = run_batch(batch_config)  # a new client object, as after a restart
    assert submissions(fake_service, submit) == 1, "the job was submitted twice"
    assert all(isinstance(r, ChatResult) for r in results) and len(results) == 3
    polled = [r.path for r in fake_service.received(api) if r.method == "GET"]
    assert any(pending[0][0] in p for p in polled)


class CrashAfterSubmit(ServiceStore):
    """Dies right after the provider accepted the job, before its id reached the database."""

    def save_batch_job(self, job_key: str, provider: str, model: str, job_id: str, status: str, items: dict[str, str]) -> None:
        if status == "submitted":
            raise Crash
        super().save_batch_job(job_key, provider, model, job_id, status, items)


def crash_after_submit(config: Any, store_class: type[ServiceStore] = CrashAfterSubmit) -> None:
    store = store_class(config.path(config.service.cache_path))

    async def crashing() -> None:
        async with open_service(config, "judge", store=store, sleep=_no_wait, batch_poll_s=0.0) as client:
            await client.chat_many(REQUESTS, stage="evaluate")

    with pytest.raises(Crash):
        asyncio.run(crashing())
    store.close()


@pytest.mark.parametrize(("batch_config", "api", "submit"), [((p, m), a, s) for p, m, a, s in CASES], indirect=["batch_config"], ids=["openai", "anthropic"])
def test_crash_before_the_id_was_saved_finds_the_job(fake_service: FakeServiceServer, batch_config: Any, api: str, submit: str) -> None:
    """OpenAI finds the job by its metadata tag; Anthropic (no metadata) by creation time and request count."""
    if api == "anthropic.batches":  # an older job of another size must not be taken for ours
        run_batch_of(batch_config, [ChatRequest([{"role": "user", "content": "an earlier, unrelated prompt"}])])
    crash_after_submit(batch_config)
    before = submissions(fake_service, submit)
    results = run_batch(batch_config)
    assert submissions(fake_service, submit) == before, "the job was submitted twice"
    assert [r.text for r in results] == [f"reply to: translate item {i}" for i in range(3)]


class CrashBeforeSubmit(ServiceStore):
    """Dies after marking the job as being submitted, before the request left: the provider never saw it."""

    def save_batch_job(self, job_key: str, provider: str, model: str, job_id: str, status: str, items: dict[str, str]) -> None:
        super().save_batch_job(job_key, provider, model, job_id, status, items)
        if status == "submitting":
            raise Crash


@pytest.mark.parametrize("batch_config", [("anthropic", "claude-haiku-4-5")], indirect=True, ids=["anthropic"])
def test_a_wrongly_adopted_batch_is_dropped_and_ours_submitted(fake_service: FakeServiceServer, batch_config: Any) -> None:
    """The batch nearest in time and size may be someone else's: no reply is mixed up, ours is then submitted."""
    other = [ChatRequest([{"role": "user", "content": f"someone else's prompt {i}"}]) for i in range(3)]
    run_batch_of(batch_config, other)  # same size, moments before ours
    crash_after_submit(batch_config, store_class=CrashBeforeSubmit)
    results = run_batch(batch_config)
    assert [r.text for r in results] == [f"reply to: translate item {i}" for i in range(3)]
    assert submissions(fake_service, "POST /v1/messages/batches") == 2
