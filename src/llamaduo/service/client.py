"""The one async interface every stage uses to talk to a service LLM: cache, budget, limits, retries, structure, cost."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from llamaduo.errors import BudgetExceeded, ConfigError, LlamaduoError
from llamaduo.service import structured
from llamaduo.service.budget import budget_for
from llamaduo.service.cache import GroupCommit, ServiceStore, cache_key
from llamaduo.service.config import ServiceModel
from llamaduo.service.errors import ServiceError, StructuredOutputError
from llamaduo.service.keys import resolve_key
from llamaduo.service.limits import gate_for
from llamaduo.service.prices import cost_usd, price_for, unpriced_error
from llamaduo.service.providers import Provider, ProviderCall, ProviderReply, make_provider
from llamaduo.service.retry import call_with_retries
from llamaduo.service.types import ChatRequest, ChatResult, Usage

T = TypeVar("T")
PARAM_NAMES = ("temperature", "top_p", "max_tokens", "seed")


@dataclass
class Prepared:
    """A prompt made ready: plain messages, merged params, schema, and the parts of its cache key."""

    messages: list[dict[str, Any]]
    params: dict[str, Any]
    schema: structured.Schema | None

    def call(self, n: int, sample: int) -> ProviderCall:
        seed = self.params.get("seed")
        # Without `n`, samples are separate requests; a fixed seed would make them identical.
        if seed is not None and sample:
            seed += sample
        return ProviderCall(
            messages=self.messages, max_tokens=self.params["max_tokens"], temperature=self.params.get("temperature"),
            top_p=self.params.get("top_p"), seed=seed, n=n, schema=self.schema,
        )

    def estimated_input_tokens(self) -> int:
        """A generous guess (3 characters a token, where most text has about 4) used for the budget and the TPM limiter."""
        chars = sum(len(m["content"]) for m in self.messages) + (len(json.dumps(self.schema.json_schema)) if self.schema else 0)
        return chars // 3 + 8 * len(self.messages) + 16


class ServiceClient:
    """The service LLM of one role. Make it with `open_service`; close it with `aclose` or `async with`."""

    def __init__(
        self,
        config: Any,
        role: str = "generator",
        index: int = 0,
        *,
        run: Any = None,
        store: ServiceStore | None = None,
        provider: Provider | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        random01: Callable[[], float] = random.random,
        batch_poll_s: float | None = None,
    ):
        self.config = config
        self.model: ServiceModel = model_for_role(config, role, index)
        self.role = role if role != "judge" or index == 0 else f"judge{index}"
        self.price = price_for(self.model, config.service.prices, label=f"service.{self._config_path()}")
        if self.price is None and config.service.budget_usd is not None:
            raise unpriced_error(f"service.{self._config_path()}", self.model.model)
        self.run = run
        self.sleep, self.clock, self.random01 = sleep, clock, random01
        self.batch_poll_s = self.model.batch_poll_s if batch_poll_s is None else batch_poll_s
        self.cache_enabled = config.service.cache
        if provider is None:
            key = resolve_key(self.model.key_env, config.path(self.model.api_key_file) if self.model.api_key_file else None, self.model.base_url, self._config_path())
            provider = make_provider(self.model, key)
        self.provider = provider
        if self.model.mode == "batch" and not provider.supports_batch:
            raise ConfigError(f"service.{self._config_path()}.mode is batch, but {self.model.provider} has no batch API here", "Use mode: online.")
        self.store = store or ServiceStore(config.path(config.service.cache_path))
        self._own_store = store is None
        self._writes = GroupCommit(self.store)
        self.budget = budget_for(self.store, config.service.budget_usd)
        # Ledger rows carry the run's iteration (the loop's stage folders know it) so spend can be shown per iteration.
        self.iteration: int | None = getattr(run, "iteration", None)
        self._default_params = self.model.params.model_dump()
        self._hit_rows: dict[tuple[str | None, bool], int] = {}
        self.stats = {"requests": 0, "retries": 0, "cache_hits": 0, "repairs": 0, "cost_usd": 0.0}

    def _config_path(self) -> str:
        return "generator" if self.role == "generator" else f"judge.{self.role[5:] or 0}"

    # ---- public API --------------------------------------------------------------------------

    async def chat(self, messages: list[Any], params: dict[str, Any] | None = None, schema: Any = None, *, sample: int = 0, stage: str | None = None) -> ChatResult:
        """One reply (sample index `sample`), from the cache when the same inputs were asked before."""
        return (await self._run(self.prepare(messages, params, schema), [sample], stage))[0]

    async def chat_samples(self, messages: list[Any], n: int, params: dict[str, Any] | None = None, schema: Any = None, *, stage: str | None = None) -> list[ChatResult]:
        """`n` samples of one prompt: one request with `n` where the provider supports it (input billed once)."""
        if n < 1:
            raise ValueError("n must be at least 1")
        return await self._run(self.prepare(messages, params, schema), list(range(n)), stage)

    async def chat_many(self, requests: list[ChatRequest], *, stage: str | None = None) -> list[ChatResult | ServiceError]:
        """Many prompts: concurrent under the limits, or one provider batch job in `mode: batch`.

        A failed item comes back as its ServiceError; BudgetExceeded stops the whole call.
        """
        if self.model.mode == "batch":
            from llamaduo.service.batch import run_batch

            return await run_batch(self, requests, stage)

        async def one(request: ChatRequest) -> ChatResult | ServiceError:
            try:
                return await self.chat(request.messages, request.params, request.schema, sample=request.sample, stage=stage)
            except BudgetExceeded:
                raise
            except ServiceError as exc:
                return exc

        return await gather_or_stop([one(r) for r in requests])

    async def aclose(self) -> None:
        self._flush_hits()
        if self.run is not None and (self.stats["requests"] or self.stats["cache_hits"]):
            self.run.event("service_usage", role=self.role, provider=self.model.provider, model=self.model.model, **self.stats)
        await self.provider.aclose()
        if self._own_store:
            self.store.close()

    async def __aenter__(self) -> ServiceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- the call path -----------------------------------------------------------------------

    def prepare(self, messages: list[Any], params: dict[str, Any] | None, schema: Any) -> Prepared:
        plain = [m.model_dump() if hasattr(m, "model_dump") else {"role": m["role"], "content": m["content"]} for m in messages]
        merged = dict(self._default_params)
        for name, value in (params or {}).items():
            if name not in PARAM_NAMES:
                raise ValueError(f"unknown generation param {name!r}; use {', '.join(PARAM_NAMES)}")
            merged[name] = value
        return Prepared(plain, {k: v for k, v in merged.items() if v is not None}, structured.as_schema(schema))

    def key(self, prepared: Prepared, sample: int) -> str:
        schema = prepared.schema.json_schema if prepared.schema else None
        return cache_key(self.model.provider, self.model.model, prepared.messages, prepared.params, schema, sample)

    def max_cost(self, prepared: Prepared, n: int, *, batch: bool = False) -> float:
        worst = Usage(input_tokens=prepared.estimated_input_tokens(), output_tokens=prepared.params["max_tokens"] * n)
        return cost_usd(worst, self.price, batch=batch)

    async def _run(self, prepared: Prepared, samples: list[int], stage: str | None) -> list[ChatResult]:
        keys = {s: self.key(prepared, s) for s in samples}
        results: dict[int, ChatResult] = {}
        if self.cache_enabled:
            for s in samples:
                hit = self.store.get(keys[s])
                if hit is not None:
                    results[s] = self._result(hit.text, hit.usage, 0.0, 0.0, hit.finish_reason, s, prepared, cache_hit=True)
            if results:
                self.stats["cache_hits"] += len(results)
                self._note_hits(stage, len(results))
        missing = [s for s in samples if s not in results]
        if self.provider.supports_n and len(missing) > 1:
            groups = [missing]
        else:
            groups = [[s] for s in missing]
        for produced in await asyncio.gather(*(self._fetch_group(prepared, group, keys, stage) for group in groups)):
            results.update(produced)
        return [results[s] for s in samples]

    async def _fetch_group(self, prepared: Prepared, group: list[int], keys: dict[int, str], stage: str | None) -> dict[int, ChatResult]:
        """One request for the samples in `group`, validated (with one repair each), then cached and billed."""
        held: list[float] = []  # budget reservations, kept until the cost is in the ledger
        try:
            return await self._fetch_group_held(prepared, group, keys, stage, held)
        finally:
            if self.budget is not None:
                self.budget.release(sum(held))

    async def _fetch_group_held(self, prepared: Prepared, group: list[int], keys: dict[int, str], stage: str | None, held: list[float]) -> dict[int, ChatResult]:
        started = self.clock()
        reply = await self.request(prepared.call(len(group), group[0]), prepared, len(group), held)
        if len(reply.texts) < len(group):
            # The server ignored `n` (Ollama does): keep what came, ask for the rest one by one from now on.
            self.provider.supports_n = False
            rest = group[len(reply.texts) :]
            group = group[: len(reply.texts)]
            others = await asyncio.gather(*(self._fetch_group(prepared, [s], keys, stage) for s in rest))
        else:
            others = []
        texts = reply.texts[: len(group)]
        finishes = (reply.finish_reasons + [None] * len(group))[: len(group)]
        usage, parsed = reply.usage, {}
        failure: LlamaduoError | None = None
        if prepared.schema is not None:
            for i, s in enumerate(group):
                try:
                    parsed[s], texts[i], repair_usage = await self._validated(prepared, texts[i], s, held)
                    usage = usage + repair_usage
                except LlamaduoError as exc:  # invalid twice, or the repair itself failed: still bill what was paid
                    usage = usage + getattr(exc, "repair_usage", Usage())
                    failure = failure or exc
        latency = self.clock() - started
        cost = cost_usd(usage, self.price)
        good = [(i, s) for i, s in enumerate(group) if prepared.schema is None or s in parsed]
        # With the cache off (e.g. a local model retrained under the same name), replies are billed, not kept.
        keep = [(keys[s], self.model.provider, self.model.model, texts[i], finishes[i], _share(usage, j, len(good))) for j, (i, s) in enumerate(good)]
        await self._writes.record(keep if self.cache_enabled else [], self._ledger(stage, usage, cost))
        self.stats["cost_usd"] += cost
        if failure is not None:
            raise failure
        produced = {
            s: self._result(texts[i], _share(usage, j, len(good)), _share_cost(cost, usage, j, len(good), self.price), latency, finishes[i], s, prepared, parsed=parsed.get(s))
            for j, (i, s) in enumerate(good)
        }
        for more in others:
            produced.update(more)
        return produced

    async def _validated(self, prepared: Prepared, text: str, sample: int, held: list[float]) -> tuple[Any, str, Usage]:
        """Parse the reply; if it does not fit the schema, send one repair request carrying the problem."""
        schema = prepared.schema
        if schema is None:
            return None, text, Usage()
        try:
            return structured.validate(text, schema), text, Usage()
        except ValueError as exc:
            problem = str(exc)
        self.stats["repairs"] += 1
        repair = Prepared(structured.repair_messages(prepared.messages, text, problem, schema), prepared.params, schema)
        reply = await self.request(repair.call(1, sample), repair, 1, held)
        fixed = reply.texts[0] if reply.texts else ""
        try:
            return structured.validate(fixed, schema), fixed, reply.usage
        except ValueError as exc:
            raise StructuredOutputError(
                f"{self.model.provider}/{self.model.model} ({self.role}) gave an invalid structured reply twice: {exc}",
                "Use a model that follows JSON schemas, or simplify the schema.",
                repair_usage=reply.usage,
            ) from None

    async def request(self, call: ProviderCall, prepared: Prepared, n: int, held: list[float]) -> ProviderReply:
        """One paid request: budget reservation, limits, and retries with backoff.

        On success the reservation is appended to `held`: the caller releases it after writing the cost to the ledger.
        """
        reserved = self.budget.reserve(self.max_cost(prepared, n), f"a {self.role} request to {self.model.model}", self.store) if self.budget else 0.0
        gate = gate_for(self.model.provider, self.model.model, self.model.base_url, self.model.limits, clock=self.clock, sleep=self.sleep)
        tokens = prepared.estimated_input_tokens() + call.max_tokens * n
        limits = self.model.limits

        async def attempt() -> ProviderReply:
            async with gate.semaphore:
                if gate.rpm is not None:
                    await gate.rpm.acquire(1)
                if gate.tpm is not None:
                    await gate.tpm.acquire(tokens)
                self.stats["requests"] += 1
                reply = await self.provider.complete(call)
                if gate.tpm is not None:
                    gate.tpm.refund(tokens - reply.usage.input_tokens - reply.usage.output_tokens)
                return reply

        try:
            reply = await call_with_retries(
                attempt, max_retries=limits.max_retries, base_s=limits.backoff_base_s, max_s=limits.backoff_max_s,
                sleep=self.sleep, random01=self.random01, what=f"{self.model.provider}/{self.model.model} ({self.role})",
                on_retry=self._count_retry,
            )
        except BaseException:
            if self.budget is not None:
                self.budget.release(reserved)
            raise
        held.append(reserved)
        return reply

    def _note_hits(self, stage: str | None, count: int, *, batch: bool = False) -> None:
        """Cache hits cost nothing, so their ledger rows are buffered (a crash loses only counts, never money)."""
        self._hit_rows[(stage, batch)] = self._hit_rows.get((stage, batch), 0) + count
        if sum(self._hit_rows.values()) >= 512:
            self._flush_hits()

    def _flush_hits(self) -> None:
        for (stage, batch), count in self._hit_rows.items():
            self.store.add_ledger(self._ledger(stage, Usage(), 0.0, cache_hit=True, batch=batch, requests=count))
        self._hit_rows.clear()

    def _count_retry(self, failure: Exception, delay: float) -> None:
        self.stats["retries"] += 1

    def _ledger(self, stage: str | None, usage: Usage, cost: float, *, cache_hit: bool = False, batch: bool = False, requests: int = 1) -> dict[str, Any]:
        return {
            "run_id": getattr(self.run, "run_id", None), "iteration": self.iteration, "stage": stage, "role": self.role,
            "provider": self.model.provider, "model": self.model.model, "input_tokens": usage.input_tokens,
            "cached_input_tokens": usage.cached_input_tokens, "output_tokens": usage.output_tokens, "cost_usd": cost,
            "cache_hit": cache_hit, "batch": batch, "requests": requests,
            # A cache hit costs nothing whatever the price; a paid reply without a price is spend of unknown size.
            "priced": cache_hit or self.price is not None,
        }

    def _result(self, text: str, usage: Usage, cost: float, latency: float, finish: str | None, sample: int, prepared: Prepared, *, cache_hit: bool = False, parsed: Any = None) -> ChatResult:
        if cache_hit and prepared.schema is not None:
            parsed = structured.validate(text, prepared.schema)
        return ChatResult(
            text=text, parsed=parsed, usage=usage if not cache_hit else Usage(), cost_usd=cost, latency_s=latency, cache_hit=cache_hit,
            provider=self.model.provider, model=self.model.model, finish_reason=finish, sample=sample,
        )


def _share(usage: Usage, j: int, k: int) -> Usage:
    """Sample j's part of a request shared by k samples: the input on the first, the output split evenly."""
    if k <= 1:
        return usage
    out = usage.output_tokens // k + (usage.output_tokens % k if j == 0 else 0)
    if j == 0:
        return Usage(input_tokens=usage.input_tokens, cached_input_tokens=usage.cached_input_tokens, output_tokens=out)
    return Usage(output_tokens=out)


def _share_cost(total: float, usage: Usage, j: int, k: int, price: Any) -> float:
    return total if k <= 1 else cost_usd(_share(usage, j, k), price)


def model_for_role(config: Any, role: str, index: int = 0) -> ServiceModel:
    if role == "generator":
        return config.service.generator
    if role == "judge":
        judges = config.service.judge
        if not 0 <= index < len(judges):
            raise ConfigError(f"there is no judge {index}: service.judge lists {len(judges)}", f"Use an index from 0 to {len(judges) - 1}.")
        return judges[index]
    raise ConfigError(f"unknown service role {role!r}", "Use generator or judge.")


async def gather_or_stop(coros: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Run all; the first exception cancels the rest and is raised (items report their own failures as values)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def open_service(config: Any, role: str = "generator", index: int = 0, *, run: Any = None, **options: Any) -> ServiceClient:
    """The client of one role (`generator`, or `judge` with `index`); `run` attributes spend to a run folder."""
    return ServiceClient(config, role, index, run=run, **options)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code (CLI, scripts); works even when an event loop is already running here.

    Uses uvloop when it is installed: the event loop is a large share of the CPU per request at high concurrency.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_in_new_loop(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(_run_in_new_loop, coro).result()


def _run_in_new_loop(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)
