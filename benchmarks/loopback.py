"""Helpers shared by the benchmarks that start servers on loopback and time requests through them."""

from __future__ import annotations

import re
import subprocess


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile by nearest rank (no interpolation: with few samples it is an observed value)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def spawn(cmd: list[str], env: dict[str, str], cwd: str) -> tuple[subprocess.Popen, str]:
    """Start a server process and read its URL from the first line it prints."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=cwd)
    line = proc.stdout.readline()
    match = re.search(r"http://[\d.]+:\d+", line)
    if not match:
        proc.kill()
        raise SystemExit(f"server did not start: {' '.join(cmd)} printed {line!r}")
    return proc, match.group(0)
