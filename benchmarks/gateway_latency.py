"""Gateway added latency: p50/p99 of chat requests through `llamaduo gateway` (capture mode, SQLite store) minus
the same requests sent straight to the service, both on loopback, measured interleaved.

The service is the fake OpenAI server from tests/fakes (instant answers) and the gateway is the real `llamaduo gateway`
process, so the difference is the gateway alone.
Targets: added p50 <= 10 ms and added p99 <= 50 ms, small beside a service LLM's own hundreds of milliseconds.
Run: .venv/bin/python benchmarks/gateway_latency.py [--requests 300] [--quick]; ends with PASS or FAIL and exits 1 on a miss.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from loopback import percentile, spawn  # benchmarks/loopback.py
from verdict import Verdicts  # benchmarks/verdict.py (this script's folder is on sys.path)

TARGET_P50_MS, TARGET_P99_MS = 10.0, 50.0



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--mode", default="capture", choices=["capture", "shadow"])
    parser.add_argument("--quick", action="store_true", help="a smoke run of 50 requests each")
    args = parser.parse_args()
    if args.quick:
        args.requests = 50

    repo = Path(__file__).resolve().parents[1]
    key = "sk-bench-0000000000000000"
    env = {**os.environ, "BENCH_SERVICE_KEY": key, "PYTHONPATH": str(repo)}
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Summarize: the sky is blue today."}]}
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            service, service_url = spawn([sys.executable, "-m", "tests.fakes.service_server", "--port", "0"], env, str(repo))
            procs.append(service)
            sets = [f"deploy.gateway.service.base_url={service_url}/v1", "deploy.gateway.service.api_key_env=BENCH_SERVICE_KEY",
                    "deploy.gateway.store_url=sqlite:///capture.sqlite", f"deploy.gateway.mode={args.mode}"]
            gateway, gateway_url = spawn([sys.executable, "-m", "llamaduo", "gateway", "--port", "0", *sum((["--set", s] for s in sets), [])], env, tmp)
            procs.append(gateway)
            targets = {"direct": f"{service_url}/v1/chat/completions", "gateway": f"{gateway_url}/v1/chat/completions"}
            auth = {"Authorization": f"Bearer {key}"}
            samples: dict[str, list[float]] = {k: [] for k in targets}
            with httpx.Client(timeout=30) as client:
                for url in targets.values():  # warm up connections and code paths
                    for _ in range(20):
                        client.post(url, json=body, headers=auth).raise_for_status()
                for _ in range(args.requests):
                    for name, url in targets.items():
                        start = time.perf_counter()
                        client.post(url, json=body, headers=auth).raise_for_status()
                        samples[name].append((time.perf_counter() - start) * 1000)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=30)
    d, g = samples["direct"], samples["gateway"]
    print(f"requests: {args.requests} each, interleaved; gateway process in {args.mode} mode with a SQLite capture store")
    print(f"direct  p50 {percentile(d, 50):7.2f} ms  p99 {percentile(d, 99):7.2f} ms  mean {statistics.mean(d):7.2f} ms")
    print(f"gateway p50 {percentile(g, 50):7.2f} ms  p99 {percentile(g, 99):7.2f} ms  mean {statistics.mean(g):7.2f} ms")
    added50, added99 = percentile(g, 50) - percentile(d, 50), percentile(g, 99) - percentile(d, 99)
    print(f"added   p50 {added50:7.2f} ms  p99 {added99:7.2f} ms")
    verdicts = Verdicts()
    verdicts.check(f"gateway ({args.mode}) added latency, p50", f"{added50:.2f} ms", f"<= {TARGET_P50_MS:g} ms", added50 <= TARGET_P50_MS)
    if args.requests < 100:  # below 100 samples the "p99" is simply the slowest request
        verdicts.not_measured(f"gateway ({args.mode}) added latency, p99", f"<= {TARGET_P99_MS:g} ms", f"needs >= 100 requests ({added99:.2f} ms over {args.requests})")
    else:
        verdicts.check(f"gateway ({args.mode}) added latency, p99", f"{added99:.2f} ms", f"<= {TARGET_P99_MS:g} ms", added99 <= TARGET_P99_MS)
    verdicts.finish()


if __name__ == "__main__":
    main()
