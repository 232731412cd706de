"""Start-up time of the CLI: `llamaduo --help` and `llamaduo status` in an initialised project, against a target.

    .venv/bin/python benchmarks/cli_startup.py [--repeats 7] [--target 0.5] [--cores 2]

Each command runs in a fresh subprocess (pinned to `--cores` CPUs where the OS allows), once to warm the file
cache and then `--repeats` times; the median wall time is compared with the target. The project is made with
`llamaduo init DIR` and holds a finished three-iteration loop run, so `status` prints its real table.
Prints the wall times (the verdict's figure) with the CPU time beside them (on a machine whose load exceeds its
cores, the difference is time spent waiting for a CPU), and a last line `PASS`, or `FAIL <command>` with exit code 1.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def llamaduo_command() -> list[str]:
    """The console script users type, beside this interpreter; `python -m llamaduo` where it is not installed."""
    script = Path(sys.executable).with_name("llamaduo")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "llamaduo"]


def make_project(folder: Path) -> None:
    from llamaduo.loop.state import IterationRecord, LoopState, MetricSummary

    subprocess.run([*llamaduo_command(), "init", str(folder)], check=True, capture_output=True, text=True)
    records = [
        IterationRecord(iteration=i, train_size=400 + 100 * i, synthetic_added=100 if i else 0, synthetic_total=100 * i, seconds=600.0,
                        metrics={"precision.mean": MetricSummary(mean=55.0 + 5 * i, ci_low=52.0 + 5 * i, ci_high=58.0 + 5 * i)},
                        target_met=i == 3, target_explanation=f"precision.mean = {55 + 5 * i} vs 70")
        for i in range(4)
    ]
    state = LoopState(run_id="bench", config_hash="bench", status="done", stage="done", iteration=3, stop_reason="target_met",
                      iterations=records, baseline=records[0].metrics, best_iteration=3, started_at=time.time() - 2400)
    run = folder / "runs" / "bench"
    run.mkdir(parents=True)
    state.save(run)


def pin(cores: int):  # type: ignore[no-untyped-def]
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not allowed or cores <= 0 or cores >= len(allowed):
        return None
    return lambda: os.sched_setaffinity(0, allowed[:cores])


def time_command(args: list[str], cwd: Path, repeats: int, cores: int) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + system) seconds of each run."""
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "100"}
    walls: list[float] = []
    cpus: list[float] = []
    for i in range(repeats + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, preexec_fn=pin(cores))
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise SystemExit(f"FAIL {' '.join(args[-2:])}: exit code {done.returncode}: {done.stderr.strip()[-300:]}")
        if i:  # the first run only warms the file cache
            walls.append(elapsed)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return walls, cpus


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--target", type=float, default=0.5, help="Seconds each command's median must stay under.")
    parser.add_argument("--cores", type=int, default=2, help="CPUs to pin the commands to (0: no pinning).")
    args = parser.parse_args()
    base = llamaduo_command()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{' '.join(base)}; {args.repeats} runs each after a warm-up; {args.cores or 'all'} of {os.cpu_count()} cores; load {load:.2f}")
    folder = Path(tempfile.mkdtemp(prefix="llamaduo-startup-"))
    misses = []
    try:
        make_project(folder)
        for name, extra in (("llamaduo --help", ["--help"]), ("llamaduo status", ["status"])):
            times, cpus = time_command([*base, *extra], folder, args.repeats, args.cores)
            median = statistics.median(times)
            print(f"{name:16s} median {median:.3f} s (min {min(times):.3f}, max {max(times):.3f}; CPU {statistics.median(cpus):.3f} s),"
                  f" target < {args.target:.2f} s")
            if median >= args.target:
                misses.append(name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print("PASS" if not misses else f"FAIL {', '.join(misses)}")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
