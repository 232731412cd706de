"""Kill `llamaduo run` with SIGKILL at random points, resume it each time, and compare with an uninterrupted run.

The service LLM is the fake loopback server (in its own process); the student is a tiny Llama-shaped model.
Prints: paid requests across all resumes / an uninterrupted run (bound: 1.0 + one in-flight request per worker
per kill), whether the final synthetic data and metrics are identical, and whether a run with 30% injected
429/5xx replies completes.

    .venv/bin/python benchmarks/kill_resume.py [--kills 10] [--seed 0] [--quick]

Ends with PASS or FAIL <which target> and exits 1 on a miss.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.tiny import build_tiny_model, chats  # noqa: E402
from verdict import Verdicts  # noqa: E402  (benchmarks/verdict.py: this script's folder is on sys.path)

WORKERS = 2  # service concurrency per role in the config below


def start_server(fail: float = 0.0) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "tests.fakes.service_server", "--port", "0", "--responder", "tests.fakes.loop_service:LoopService"]
    if fail:
        cmd += ["--fail-429", str(fail / 2), "--fail-5xx", str(fail / 2), "--retry-after", "0.05"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if "listening on" not in line:
        raise SystemExit(f"fake server did not start: {line!r}")
    return proc, line.split("listening on", 1)[1].strip()


def write_config(project: Path, url: str, model: Path) -> Path:
    project.mkdir(parents=True, exist_ok=True)
    data = project / "echo.jsonl"
    data.write_text("".join(json.dumps({"messages": [m.model_dump() for m in ex.messages]}) + "\n" for ex in chats(24, seed=3)))
    role = {"provider": "openai", "model": "gpt-4o-mini", "base_url": url + "/v1", "api_key_env": "FAKE_SERVICE_KEY",
            "supports_n": False,  # M judge repeats as separate requests: more paid calls for the kills to land among
            "limits": {"concurrency": WORKERS, "timeout_s": 10, "max_retries": 8, "backoff_base_s": 0.02, "backoff_max_s": 0.2}}
    config = {
        "project": {"name": "killtest"},
        "service": {"generator": role, "judge": [role]},
        "data": {"sources": [{"path": str(data), "task": "general"}], "test_size": 8},
        "synth": {"seeds_per_call": 2, "pairs_per_call": 2, "concurrency": WORKERS, "language": None},
        "train": {"base_model": str(model), "max_steps": 3, "batch_size": 4, "max_seq_len": 64, "save_steps": 1, "logging_steps": 1},
        "infer": {"max_new_tokens": 6, "batch_size": 8},
        "evaluate": {"repeats": 3, "metrics": ["rouge_l"], "bootstrap": 100, "target": {"precision.mean": 90}},
        "loop": {"max_iterations": 3, "schedule": {"size": 8}},
    }
    path = project / "llamaduo.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def llamaduo_run(config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FAKE_SERVICE_KEY": "sk-fake-test-key-0123456789abcdef", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-m", "llamaduo", "run", str(config), "--quiet"], cwd=config.parent, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def requests_seen(url: str) -> int:
    return int(httpx.get(url + "/_fake/stats").json()["counts"].get("openai.chat", 0))


def outcome(project: Path) -> tuple[str, list[tuple[int, int, float | None]]]:
    sys.path.insert(0, str(REPO / "src"))
    from llamaduo.config import load_config
    from llamaduo.data.store import DatasetStore
    from llamaduo.loop.state import LoopState

    config = load_config(project / "llamaduo.yaml")
    store = DatasetStore(config.path(config.data.store))
    # Content ids hash task + messages: the pairs themselves, not provenance such as timestamps.
    data = json.dumps(sorted(e.id for split in ("train", "synthetic") for e in store.examples(split)))
    state = LoopState.load(project / "runs" / "killtest")
    metrics = [(r.iteration, r.train_size, r.metrics["precision.mean"].mean if "precision.mean" in r.metrics else None) for r in state.iterations]
    return data, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a smoke run with 2 kills")
    args = parser.parse_args()
    if args.quick:
        args.kills = 2
    verdicts = Verdicts()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="llamaduo-kill-"))
    model = build_tiny_model(work / "tiny")
    server, url = start_server()
    try:
        clean_cfg = write_config(work / "clean", url, model)
        t0 = time.perf_counter()
        proc = llamaduo_run(clean_cfg)
        _, err = proc.communicate()
        clean_s = time.perf_counter() - t0
        if proc.returncode != 0:
            print(f"FAIL the uninterrupted run exited {proc.returncode}: {err.decode().strip().splitlines()[-1:]}")
            sys.exit(1)
        clean_requests = requests_seen(url)
        print(f"uninterrupted run: {clean_s:.1f} s, {clean_requests} paid requests")

        httpx.post(url + "/_fake/reset")
        kill_cfg = write_config(work / "killed", url, model)
        kills = 0
        while kills < args.kills:
            proc = llamaduo_run(kill_cfg)
            # Early enough that ten kills fit in one run's worth of progress; some land during start-up, which is fair too.
            delay = rng.uniform(1.0, clean_s * 0.6)
            try:
                proc.wait(timeout=delay)
                break  # finished before the kill point: nothing left to interrupt
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                print(f"  kill {kills} at {delay:.1f} s")
        proc = llamaduo_run(kill_cfg)
        _, err = proc.communicate()
        if proc.returncode != 0:
            print(f"FAIL the resumed run exited {proc.returncode}: {err.decode().strip().splitlines()[-1:]}")
            sys.exit(1)
        resumed_requests = requests_seen(url)
        same_data, same_metrics = (a == b for a, b in zip(outcome(work / "clean"), outcome(work / "killed"), strict=True))
        bound = 1.0 + kills * WORKERS / max(clean_requests, 1)
        ratio = resumed_requests / max(clean_requests, 1)
        print(f"paid requests, {kills} kills + resumes / uninterrupted: {resumed_requests}/{clean_requests}")
        # The bound: one in-flight request per worker per kill may be paid twice.
        verdicts.check(f"paid requests, {kills} kills + resumes / uninterrupted", f"{ratio:.3f}", f"<= {bound:.3f}", ratio <= bound)
        verdicts.check("final synthetic data identical to the uninterrupted run's", str(same_data), "True", same_data)
        verdicts.check("final metrics identical to the uninterrupted run's", str(same_metrics), "True", same_metrics)
    finally:
        server.terminate()

    server, url = start_server(fail=0.3)
    try:
        cfg = write_config(work / "faulty", url, model)
        t0 = time.perf_counter()
        proc = llamaduo_run(cfg)
        _, err = proc.communicate()
        status = "completed" if proc.returncode == 0 else f"FAILED: {err.decode()[-300:]}"
        print(f"30% injected 429/5xx: {status} in {time.perf_counter() - t0:.1f} s, {requests_seen(url)} requests incl. retries")
        verdicts.check("a run with 30% injected 429/5xx replies", status.split(":")[0], "completed", proc.returncode == 0)
    finally:
        server.terminate()
    verdicts.finish()


if __name__ == "__main__":
    main()
