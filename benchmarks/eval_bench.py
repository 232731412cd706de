"""Evaluation figures: sandbox throughput on MBPP, judge input billing for M samples, and offline scorers' judge-check.

    .venv/bin/python benchmarks/eval_bench.py [--mbpp 500] [--judge-check-sample 100] [--skip-judge-check]

1. pass@1 over the MBPP test tasks with their canonical code, through the sandbox (2 workers, then 1 worker on a
   slice for the side-by-side ratio), in tasks/s; every task must pass.
2. Judge input tokens billed for M = 10 judgments / one judgment, measured at the loopback fake server
   [target <= 1.2]; for a provider without `n` (Anthropic protocol) also the raw and the cache-discounted ratios.
3. Agreement of the offline scorers (rouge_l, embedding) with humans on PandaLM, LLMBar and SummEval.
Ends with PASS or FAIL <which target>, and exits 1 when a canonical solution fails or the billing ratio misses.
The judge-check figures have no target: they are printed for the reader to weigh.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.fakes, the loopback server

from verdict import Verdicts  # noqa: E402  (benchmarks/verdict.py: this script's folder is on sys.path)


def shared_data() -> Path:
    for c in (os.environ.get("LLAMADUO_SHARED_DATA"), REPO.parent / "shared" / "data", REPO / "shared" / "data"):
        if c and (Path(c) / "mbpp").is_dir():
            return Path(c)
    sys.exit("error: ../shared/data not found. Set LLAMADUO_SHARED_DATA.")


def bench_sandbox(limit: int, verdicts: Verdicts) -> None:
    from llamaduo.evaluate.config import SandboxConfig
    from llamaduo.evaluate.metrics.passk import pass_at_k, program_with_tests
    from llamaduo.evaluate.sandbox import Sandbox

    rows = [json.loads(line) for line in (shared_data() / "mbpp" / "mbpp_test_500.jsonl").read_text().splitlines()][:limit]
    programs = [program_with_tests(r["code"], r) for r in rows]
    sandbox = Sandbox(SandboxConfig(timeout_s=60))
    print(f"sandbox isolation: {sandbox.isolation}")
    started = time.perf_counter()
    results = sandbox.run_many(programs, workers=2)
    two = time.perf_counter() - started
    failed = [(r["task_id"], res.reason) for r, res in zip(rows, results, strict=True) if not res.passed]
    p1 = sum(pass_at_k(1, int(res.passed), 1) for res in results) / len(results)
    print(f"MBPP canonical, {len(rows)} tasks, 2 workers: {len(rows) / two:.1f} tasks/s ({two:.1f} s), pass@1 = {p1:.3f}, failed {len(failed)} {failed[:5]}")
    part = programs[: max(1, len(programs) // 5)]
    started = time.perf_counter()
    sandbox.run_many(part, workers=1)
    one = time.perf_counter() - started
    print(f"  1 worker on {len(part)} tasks: {len(part) / one:.1f} tasks/s; speed-up of 2 workers: {(len(rows) / two) / (len(part) / one):.2f}x")
    verdicts.check(f"MBPP canonical solutions passing in the sandbox ({len(rows)} tasks)", f"{p1:.3f}", "= 1", not failed)
    verdicts.figure("sandbox throughput, 2 workers", f"{len(rows) / two:.1f} tasks/s")


def bench_billing(verdicts: Verdicts) -> None:
    from llamaduo.config import load_config
    from llamaduo.evaluate import evaluate
    from llamaduo.records import Answer, Message
    from tests.fakes import FakeServiceServer
    from tests.fakes.protocols import tokens

    os.environ["FAKE_SERVICE_KEY"] = "sk-fake-bench-key-0123456789abcdef"
    answer = Answer(example_id="b0", task="summarization", messages=[Message(role="user", content="Summarise: " + "text " * 300)],
                    reference="A reference summary. " * 20, text="A candidate summary. " * 20)
    for provider in ("openai", "anthropic"):
        with FakeServiceServer() as server, tempfile.TemporaryDirectory() as tmp:
            base = server.openai_base_url if provider == "openai" else server.url
            role = {"provider": provider, "model": "judge-model", "base_url": base, "api_key_env": "FAKE_SERVICE_KEY", "free": True}
            billed: dict[int, tuple[int, int]] = {}
            for m in (1, 10):
                server.reset()
                cfg = load_config(data={"project": {"workdir": tmp}, "service": {"judge": [role], "cache": False},
                                        "evaluate": {"repeats": m, "metrics": [], "bootstrap": 100}})
                evaluate(cfg, [answer])
                bodies = [r.json for r in server.received()]
                raw = sum(tokens(json.dumps(_messages(b))) for b in bodies)
                # Prompt-cache discount: every request after the first re-reads the cached prefix at 10% of the price.
                cached = raw if len(bodies) == 1 else tokens(json.dumps(_messages(bodies[0]))) + 0.1 * (raw - tokens(json.dumps(_messages(bodies[0]))))
                billed[m] = (raw, cached)
            ratio = billed[10][0] / billed[1][0]
            discounted = billed[10][1] / billed[1][1]
            print(f"judge input tokens, M=10 / one call, {provider}: {ratio:.2f} raw, {discounted:.2f} with a 90% prompt-cache discount "
                  f"({'one request with n' if ratio < 1.5 else 'M requests'})")
            if provider == "openai":
                verdicts.check("judge input tokens billed, M=10 / one call (openai, n)", f"{ratio:.2f}", "<= 1.2", ratio <= 1.2)


def _messages(body: dict) -> list:
    system = body.get("system")
    return ([{"role": "system", "content": system}] if system else []) + list(body.get("messages", []))


def bench_judge_check(sample: int) -> None:
    from llamaduo.config import load_config
    from llamaduo.evaluate import judge_check

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(data={"project": {"workdir": tmp}})
        for scorer in ("rouge_l", "embedding"):
            started = time.perf_counter()
            report = judge_check(cfg, scorer, sample=sample, data_dir=shared_data())
            print(f"judge-check {scorer} (n={sample} per set, {time.perf_counter() - started:.0f} s):")
            for name, figures in report.sets.items():
                print("  " + name + ": " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mbpp", type=int, default=500, help="MBPP test tasks to run (all 500 by default)")
    parser.add_argument("--judge-check-sample", type=int, default=100)
    parser.add_argument("--skip-judge-check", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 50 MBPP tasks, no judge-check")
    args = parser.parse_args()
    if args.quick:
        args.mbpp, args.skip_judge_check = 50, True
    verdicts = Verdicts()
    bench_sandbox(args.mbpp, verdicts)
    bench_billing(verdicts)
    if not args.skip_judge_check:
        bench_judge_check(args.judge_check_sample)
    verdicts.finish()


if __name__ == "__main__":
    main()
