"""Live judging must not slow requests: p50/p99 of chat requests through a gateway in capture mode (no live judging)
beside a gateway in shadow mode judging a share of its pairs in the background, measured interleaved.

Both gateways are real `llamaduo gateway` processes with SQLite capture stores. The service LLM and the judge are one
fake OpenAI server (tests/fakes) answering after --service-ms; the local model is a second fake answering after
--local-ms. Prompts differ per request, so no judgment comes from the cache: every chosen pair is a real judge request.
Target: the live gateway's p99 within 10% of the capture gateway's.
Run: .venv/bin/python benchmarks/live_judging_latency.py [--requests 300] [--share 1.0] [--quick]; ends with PASS or FAIL
(exit 1 on a miss).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from loopback import percentile, spawn  # benchmarks/loopback.py (this script's folder is on sys.path)

TOLERANCE = 0.10




def project(folder: Path, service: str, local: str, *, mode: str, live: bool, share: float, repeats: int) -> Path:
    role = {"provider": "openai", "model": "gpt-4o-mini", "base_url": f"{service}/v1"}
    gateway = {"mode": mode, "port": 0, "store_url": "sqlite:///capture.sqlite",
               "service": {"base_url": f"{service}/v1", "api_key_env": None}, "local": {"base_url": f"{local}/v1", "api_key_env": None},
               "live_eval": {"enabled": live, "share": share, "daily_budget_usd": None}}
    data = {"project": {"workdir": "."}, "service": {"generator": role, "judge": [role]}, "evaluate": {"repeats": repeats},
            "deploy": {"gateway": gateway}}
    folder.mkdir(parents=True)
    (folder / "llamaduo.yaml").write_text(yaml.safe_dump(data))
    return folder


def judged(folder: Path) -> int:
    if not (folder / "capture.sqlite").is_file():
        return 0
    try:
        with sqlite3.connect(folder / "capture.sqlite") as conn:
            return conn.execute("SELECT COUNT(*) FROM llamaduo_capture_scores WHERE status = 'judged'").fetchone()[0]
    except sqlite3.Error:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300, help="requests per gateway")
    parser.add_argument("--share", type=float, default=1.0, help="share of pairs judged (production default 0.05; 1.0 is the worst case)")
    parser.add_argument("--repeats", type=int, default=3, help="evaluate.repeats of the judge")
    parser.add_argument("--service-ms", type=float, default=50.0, help="latency of the fake service LLM (and judge)")
    parser.add_argument("--local-ms", type=float, default=100.0, help="latency of the fake local model")
    parser.add_argument("--quick", action="store_true", help="a smoke run of 60 requests each")
    args = parser.parse_args()
    if args.quick:
        args.requests = 60
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    procs: list[subprocess.Popen] = []
    samples: dict[str, list[float]] = {"capture": [], "shadow": [], "live": []}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            service_proc, service = spawn([sys.executable, "-m", "tests.fakes.service_server", "--port", "0", "--latency-ms", str(args.service_ms)], env, str(repo))
            local_proc, local = spawn([sys.executable, "-m", "tests.fakes.service_server", "--port", "0", "--latency-ms", str(args.local_ms)], env, str(repo))
            procs += [service_proc, local_proc]
            common = {"share": args.share, "repeats": args.repeats}
            folders = {"capture": project(Path(tmp) / "capture", service, local, mode="capture", live=False, **common),
                       "shadow": project(Path(tmp) / "shadow", service, local, mode="shadow", live=False, **common),
                       "live": project(Path(tmp) / "live", service, local, mode="shadow", live=True, **common)}
            urls = {}
            for name, folder in folders.items():
                proc, urls[name] = spawn([sys.executable, "-m", "llamaduo", "gateway", "--config", "llamaduo.yaml"], env, str(folder))
                procs.append(proc)
            with httpx.Client(timeout=60) as client:
                for i in range(20 * len(urls)):  # warm up connections and code paths
                    name = list(urls)[i % len(urls)]
                    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"Warm-up {i}."}]}
                    client.post(f"{urls[name]}/v1/chat/completions", json=body).raise_for_status()
                before = judged(folders["live"])
                started = time.perf_counter()
                for i in range(args.requests):
                    for name, url in urls.items():  # interleaved: both see the same machine noise
                        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"Summarize note {i} of the {name} run: the sky is blue today."}]}
                        t0 = time.perf_counter()
                        client.post(f"{url}/v1/chat/completions", json=body).raise_for_status()
                        samples[name].append((time.perf_counter() - t0) * 1000)
                elapsed = time.perf_counter() - started
                during = judged(folders["live"]) - before
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=30)
    c, sh, lv = samples["capture"], samples["shadow"], samples["live"]
    print(f"requests: {args.requests} per gateway, interleaved over {elapsed:.0f} s; service {args.service_ms:g} ms, local {args.local_ms:g} ms (fakes)")
    print(f"live gateway: shadow mode, judging share {args.share:g} with {args.repeats} repeats; {during} pairs judged while measuring")
    print(f"{'':24}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    print(f"{'capture (no judging)':24}{percentile(c, 50):10.2f}{percentile(c, 99):10.2f}{statistics.mean(c):10.2f}")
    print(f"{'shadow (no judging)':24}{percentile(sh, 50):10.2f}{percentile(sh, 99):10.2f}{statistics.mean(sh):10.2f}")
    print(f"{'shadow + live judging':24}{percentile(lv, 50):10.2f}{percentile(lv, 99):10.2f}{statistics.mean(lv):10.2f}")
    ratio = percentile(lv, 99) / percentile(c, 99)
    print(f"p99 ratio live/capture: {ratio:.3f} (target <= {1 + TOLERANCE:.2f})")
    if args.requests < 100:
        print("NOT MEASURED: p99 needs >= 100 requests per gateway (below that it is the slowest request)")
        return
    if during == 0:
        print("FAIL: no pair was judged while measuring, so the run says nothing about live judging")
        sys.exit(1)
    passed = ratio <= 1 + TOLERANCE
    print("PASS" if passed else "FAIL")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
