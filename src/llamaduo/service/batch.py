"""Provider batch jobs (OpenAI Batch, Anthropic Message Batches): submit once, persist the job id, poll, fill the cache.

The job id is saved in the project database right after submission, keyed by the set of prompts, so a run
killed while waiting resumes polling the same job instead of paying for a second one.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from llamaduo.service.errors import ServiceError, StructuredOutputError
from llamaduo.service.prices import cost_usd
from llamaduo.service.providers import BatchState, ProviderReply
from llamaduo.service.retry import call_with_retries
from llamaduo.service.types import ChatRequest, ChatResult, Usage

if TYPE_CHECKING:
    from llamaduo.service.client import Prepared, ServiceClient


def job_key_for(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(set(keys))).encode()).hexdigest()


async def run_batch(client: ServiceClient, requests: list[ChatRequest], stage: str | None) -> list[ChatResult | ServiceError]:
    prepared = [client.prepare(r.messages, r.params, r.schema) for r in requests]
    keys = [client.key(p, r.sample) for p, r in zip(prepared, requests, strict=True)]
    results: dict[int, ChatResult | ServiceError] = {}
    hits = 0
    if client.cache_enabled:
        for i, key in enumerate(keys):
            hit = client.store.get(key)
            if hit is not None:
                results[i] = client._result(hit.text, hit.usage, 0.0, 0.0, hit.finish_reason, requests[i].sample, prepared[i], cache_hit=True)
                hits += 1
        if hits:
            client.stats["cache_hits"] += hits
            client._note_hits(stage, hits, batch=True)
    missing = [i for i in range(len(requests)) if i not in results]
    if missing:
        by_key: dict[str, int] = {}
        for i in missing:
            by_key.setdefault(keys[i], i)
        outcomes = await _submit_and_collect(client, {k: (prepared[i], requests[i].sample) for k, i in by_key.items()}, stage)
        for i in missing:
            results[i] = outcomes[keys[i]]
    return [results[i] for i in range(len(requests))]


async def _submit_and_collect(client: ServiceClient, todo: dict[str, tuple[Prepared, int]], stage: str | None) -> dict[str, ChatResult | ServiceError]:
    store, provider, model = client.store, client.provider, client.model
    job_key = job_key_for(list(todo))
    job = store.batch_job(job_key)
    reserved = 0.0
    # Anthropic allows only [a-zA-Z0-9_-]{1,64} as custom ids; a key prefix is unique enough and traceable.
    items = job["items"] if job is not None else {f"k{key[:40]}": key for key in todo}
    job_id = job["job_id"] if job is not None and job["status"] in ("submitted", "adopted") else None
    adopted = job is not None and job["status"] == "adopted"
    if job is not None and job["status"] == "submitting":
        # Killed between submitting and saving the id: look the job up (OpenAI by our tag, Anthropic by time and size).
        since, count = job["updated_at"], len(items)
        job_id = await _retrying(client, lambda: provider.find_batch(job_key, since=since, count=count), "batch lookup")
        if job_id is not None:
            adopted = True
            store.save_batch_job(job_key, model.provider, model.model, job_id, "adopted", items)
    if job_id is None:
        if client.budget is not None:
            estimate = sum(client.max_cost(p, 1, batch=True) for p, _ in todo.values())
            reserved = client.budget.reserve(estimate, f"a batch of {len(todo)} {client.role} requests to {model.model}", store)
        calls = [(cid, todo[key][0].call(1, todo[key][1])) for cid, key in items.items()]
        store.save_batch_job(job_key, model.provider, model.model, "", "submitting", items)
        try:
            job_id = await _retrying(client, lambda: provider.submit_batch(calls, job_key), "batch submission")
        except BaseException:
            if client.budget is not None:
                client.budget.release(reserved)
            raise
        client.stats["requests"] += 1
        store.save_batch_job(job_key, model.provider, model.model, job_id, "submitted", items)
        if client.run is not None:
            client.run.event("service_batch_submitted", role=client.role, provider=model.provider, job_id=job_id, requests=len(items))
    state = await _wait(client, job_id)
    if state.status == "failed":
        store.set_batch_status(job_key, "failed")
        if client.budget is not None:
            client.budget.release(reserved)
        error = ServiceError(f"{model.provider} batch {job_id} failed: {state.detail}", "Rerun to submit a new batch, or use mode: online.")
        return dict.fromkeys(todo, error)
    raw = await _retrying(client, lambda: provider.fetch_batch(state, job_id), "batch download")
    if adopted and raw and not raw.keys() & items.keys():
        # Found by time and size after a crash (Anthropic has no tags), but it was someone else's batch.
        store.set_batch_status(job_key, "failed")
        if client.run is not None:
            client.run.event("service_batch_mismatch", role=client.role, provider=model.provider, job_id=job_id)
        return await _submit_and_collect(client, todo, stage)  # the job is marked failed now, so this submits anew
    outcomes, usage = await _absorb(client, todo, items, raw, stage)
    cost = cost_usd(usage, client.price, batch=True)
    store.record([], client._ledger(stage, usage, cost, batch=True, requests=len(items)))
    client.stats["cost_usd"] += cost
    if client.budget is not None:
        client.budget.release(reserved)
    store.set_batch_status(job_key, "done")
    return outcomes


async def _absorb(
    client: ServiceClient, todo: dict[str, tuple[Prepared, int]], items: dict[str, str], raw: dict[str, ProviderReply | Exception], stage: str | None
) -> tuple[dict[str, ChatResult | ServiceError], Usage]:
    """Validate each reply (one online repair if needed), cache the good ones; return results and the batch usage."""
    outcomes: dict[str, ChatResult | ServiceError] = {}
    total = Usage()
    what = f"{client.model.provider}/{client.model.model} ({client.role}) batch item"
    for cid, key in items.items():
        prepared, sample = todo[key]
        reply = raw.get(cid)
        if reply is None or isinstance(reply, Exception):
            detail = str(reply) if reply is not None else "missing from the batch results"
            outcomes[key] = ServiceError(f"{what} failed: {detail}", "Rerun to ask again.", retryable=True)
            continue
        total = total + reply.usage
        text = reply.texts[0] if reply.texts else ""
        finish = reply.finish_reasons[0] if reply.finish_reasons else None
        parsed, extra, failure = None, Usage(), None
        held: list[float] = []
        if prepared.schema is not None:
            try:
                parsed, text, extra = await client._validated(prepared, text, sample, held)
            except (StructuredOutputError, ServiceError) as exc:
                extra, failure = getattr(exc, "repair_usage", Usage()), exc
        # The repair (if any) went online at full price; it is billed by its own ledger row.
        repair_cost = cost_usd(extra, client.price)
        if extra.input_tokens or extra.output_tokens:
            client.store.add_ledger(client._ledger(stage, extra, repair_cost))
        if client.budget is not None:
            client.budget.release(sum(held))
        if failure is not None:
            outcomes[key] = failure
            continue
        if client.cache_enabled:
            client.store.record([(key, client.model.provider, client.model.model, text, finish, reply.usage)], None)
        outcomes[key] = client._result(
            text, reply.usage, cost_usd(reply.usage, client.price, batch=True) + repair_cost, 0.0, finish, sample, prepared, parsed=parsed
        )
    return outcomes, total


async def _wait(client: ServiceClient, job_id: str) -> BatchState:
    """Poll until the job ends; the sleep is the client's, so tests poll without waiting."""
    while True:
        state = await _retrying(client, lambda: client.provider.poll_batch(job_id), "batch status")
        if state.status != "pending":
            return state
        await client.sleep(client.batch_poll_s)


async def _retrying(client: ServiceClient, fn: Any, what: str) -> Any:
    limits = client.model.limits
    return await call_with_retries(
        fn, max_retries=limits.max_retries, base_s=limits.backoff_base_s, max_s=limits.backoff_max_s,
        sleep=client.sleep, random01=client.random01, what=f"{client.model.provider} {what}", on_retry=client._count_retry,
    )
