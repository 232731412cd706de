"""Throughput, resilience, caching and sampling cost of the service layer against the fake server in its own process.

    .venv/bin/python benchmarks/service_throughput.py [--requests 2000] [--concurrency 64] [--latency-ms 1000] [--quick]

Checks (targets in brackets): achieved/ideal rate at concurrency 64 and 1 s latency, ideal being concurrency /
latency [>= 0.95]; requests sent on an identical re-run / requests [= 0]; input tokens billed for M=10 samples / one
call [<= 1.2]; completed/requested with 10% 429s [= 1]. It also prints the client CPU per request beside that of
the plain `openai` SDK doing the same requests (at 1 s latency neither is the limit; at 50 ms on 2 cores, both are).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # so `tests.fakes` imports when run as a script

from llamaduo.config import load_config  # noqa: E402
from llamaduo.service import ChatRequest, ChatResult, open_service, run_sync  # noqa: E402
from llamaduo.service.providers.openai_provider import http_module  # noqa: E402
from verdict import Verdicts  # noqa: E402  (benchmarks/verdict.py: this script's folder is on sys.path)


class ServerProcess:
    """`python -m tests.fakes.service_server` in a child process, on a free port."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.service_server", "--port", "0", *args],
            cwd=REPO, stdout=subprocess.PIPE, text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"fake server did not start: {line!r}")
        self.url = line.split()[-1]

    def stats(self, reset: bool = False) -> dict:
        request = urllib.request.Request(f"{self.url}/_fake/{'reset' if reset else 'stats'}", method="POST" if reset else "GET")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def cpu_seconds(self) -> float:
        """User+system CPU of the server process so far (Linux /proc), to tell whose CPU limits the rate."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return float("nan")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def make_config(url: str, workdir: Path, concurrency: int, *, supports_n: bool | None = None):
    role = {
        "provider": "openai", "model": "gpt-4o-mini", "base_url": f"{url}/v1", "api_key_env": "BENCH_FAKE_KEY",
        "supports_n": supports_n, "params": {"max_tokens": 64},
        "limits": {"concurrency": concurrency, "timeout_s": 30, "max_retries": 20, "backoff_base_s": 0.05, "backoff_max_s": 1.0},
    }
    return load_config(data={"project": {"workdir": str(workdir)}, "service": {"generator": role, "judge": [role]}})


def prompts(count: int, tag: str) -> list[ChatRequest]:
    system = {"role": "system", "content": "You write short, helpful answers for a customer-support assistant."}
    return [ChatRequest([system, {"role": "user", "content": f"{tag} question number {i}: how do I reset my password?"}]) for i in range(count)]


async def run_many(config, requests: list[ChatRequest]) -> tuple[float, float, list, dict]:
    """Wall and CPU seconds, results and client counters for `requests`, after a warm-up (not counted)."""
    async with open_service(config, "generator") as client:
        await client.chat_many(prompts(64, "warm-up"), stage="warm-up")
        before = dict(client.stats)
        started, cpu0 = time.perf_counter(), time.process_time()
        results = await client.chat_many(requests, stage="bench")
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
        counters = {k: client.stats[k] - before[k] for k in ("requests", "retries", "cache_hits")}
        return elapsed, cpu, results, counters


async def side_by_side(url: str, requests: list[ChatRequest], concurrency: int, how: str) -> tuple[float, float]:
    """Wall and CPU seconds for the same requests without llamaduo, each behind a semaphore:

    `plain`: AsyncOpenAI as most code uses it (chat.completions.create, default httpx transport);
    `sdk-floor`: the SDK the way llamaduo drives it (generic post, aiohttp transport), with nothing of ours around it;
    `no-sdk`: aiohttp alone, no SDK at all: what any Python client could reach against this server on this machine.
    """
    import aiohttp
    import openai

    body = {"model": "gpt-4o-mini", "max_tokens": 64}
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) if how == "no-sdk" else None
    http_client = openai.DefaultAioHttpClient() if how == "sdk-floor" else None
    client = openai.AsyncOpenAI(api_key="sk-bench", base_url=f"{url}/v1", max_retries=0, http_client=http_client)
    gate = asyncio.Semaphore(concurrency)

    async def one(request: ChatRequest) -> None:
        async with gate:
            if session is not None:
                async with session.post(f"{url}/v1/chat/completions", json={**body, "messages": request.messages}, headers={"Authorization": "Bearer sk-bench"}) as response:
                    json.loads(await response.read())
            elif how == "sdk-floor":
                response = await client.post("/chat/completions", body={**body, "messages": request.messages}, cast_to=http_module().Response)
                json.loads(await response.aread())
            else:
                await client.chat.completions.create(model="gpt-4o-mini", messages=request.messages, max_tokens=64)

    await asyncio.gather(*(one(r) for r in prompts(64, f"{how} warm-up")))
    started, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(r) for r in requests))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
    await client.close()
    if session is not None:
        await session.close()
    return elapsed, cpu


async def sample_tokens(config, m: int) -> tuple[int, int]:
    messages = [{"role": "system", "content": "You are a strict judge. " * 40}, {"role": "user", "content": "Rate this answer from 0 to 100."}]
    async with open_service(config, "judge") as client:
        one = await client.chat(messages, params={"temperature": 0.0}, stage="bench")
        samples: list[ChatResult] = await client.chat_samples(messages, n=m, params={"temperature": 1.0}, stage="bench")
    return one.usage.input_tokens, sum(s.usage.input_tokens for s in samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=1000.0, help="the fake service's latency: a realistic LLM reply time")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--all-clients", action="store_true", help="also time the SDK floor and an SDK-free client")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 256 requests at 250 ms (figures not comparable to the target's)")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.latency_ms = 256, 250.0
    os.environ.setdefault("BENCH_FAKE_KEY", "sk-bench-not-a-real-key")
    latency = f"{args.latency_ms:g}"
    ideal_rate = args.concurrency / (args.latency_ms / 1000.0)
    verdicts = Verdicts()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server = ServerProcess("--latency-ms", latency)
        try:
            config = make_config(server.url, work / "a", args.concurrency)
            requests = prompts(args.requests, "a")
            server_cpu0 = server.cpu_seconds()
            elapsed, cpu, results, counters = run_sync(run_many(config, requests))
            server_cpu = server.cpu_seconds() - server_cpu0
            ok = sum(isinstance(r, ChatResult) for r in results)
            rate_ratio = args.requests / elapsed / ideal_rate
            print(f"throughput: {args.requests} requests ({ok} ok, {counters['requests']} sent) at concurrency {args.concurrency}, "
                  f"{args.latency_ms:g} ms latency, in {elapsed:.2f}s = {args.requests / elapsed:.1f}/s; ideal {ideal_rate:.1f}/s; "
                  f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
            name = f"achieved/ideal rate at concurrency {args.concurrency}, {args.latency_ms:g} ms"
            if args.quick:  # 4 waves of requests: ramp-up is a large share of them, unlike the target's 32
                verdicts.not_measured(name, ">= 0.95 at 2000 requests, 1000 ms", f"{rate_ratio:.3f} in a --quick run")
            else:
                verdicts.check(name, f"{rate_ratio:.3f}", ">= 0.95", rate_ratio >= 0.95 and ok == args.requests)
            ours = cpu / args.requests * 1000
            wall, plain_cpu = run_sync(side_by_side(server.url, prompts(args.requests, "plain"), args.concurrency, "plain"))
            plain = plain_cpu / args.requests * 1000
            print(f"  client CPU per request: llamaduo {ours:.2f} ms, plain AsyncOpenAI {plain:.2f} ms "
                  f"(its rate: {args.requests / wall / ideal_rate:.3f} of ideal); fake server {server_cpu / args.requests * 1000:.2f} ms")
            verdicts.figure("client CPU per request, llamaduo / plain openai SDK", f"{ours:.2f} ms / {plain:.2f} ms")
            if args.all_clients:
                for how in ("sdk-floor", "no-sdk"):
                    wall, their_cpu = run_sync(side_by_side(server.url, prompts(args.requests, how), args.concurrency, how))
                    print(f"  {how:9s} rate {args.requests / wall / ideal_rate:.3f} of ideal, client CPU {their_cpu / args.requests * 1000:.2f} ms per request")

            server.stats(reset=True)
            elapsed2, _, results2, _ = run_sync(run_many(config, requests))
            resent = server.stats()["counts"].get("openai.chat", 0)
            hits = sum(isinstance(r, ChatResult) and r.cache_hit for r in results2)
            print(f"re-run: {hits}/{args.requests} from cache in {elapsed2:.2f}s, $ {sum(r.cost_usd for r in results2 if isinstance(r, ChatResult)):.4f}")
            verdicts.check("requests sent on an identical re-run / requests", f"{resent / args.requests:.3f}", "= 0", resent == 0)

            config_m = make_config(server.url, work / "m", args.concurrency)
            one, many = run_sync(sample_tokens(config_m, args.samples))
            print(f"sampling: one call bills {one} input tokens; M={args.samples} samples bill {many}")
            verdicts.check(f"input tokens billed, M={args.samples} samples / one call", f"{many / one:.2f}", "<= 1.2", many / one <= 1.2)
        finally:
            server.close()

        flaky = ServerProcess("--latency-ms", latency, "--fail-429", "0.1", "--retry-after", "0.05")
        try:
            config = make_config(flaky.url, work / "b", args.concurrency)
            elapsed, _, results, counters = run_sync(run_many(config, prompts(args.requests, "b")))
            ok = sum(isinstance(r, ChatResult) for r in results)
            print(f"with 10% 429s: {ok}/{args.requests} completed in {elapsed:.2f}s using {counters['requests']} requests ({counters['retries']} retries)")
            verdicts.check("completed/requested with 10% 429s", f"{ok / args.requests:.3f}", "= 1", ok == args.requests)
        finally:
            flaky.close()
    verdicts.finish()


if __name__ == "__main__":
    main()
