"""`make bench`: every benchmark in this folder, one after another, then one table of figure, target and verdict.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only NAME ...] [--skip NAME ...] [--timeout S] [--markdown FILE]

A benchmark is a script here with a `__main__` block. Each ends with one line, `PASS` or `FAIL <which target>`, and
exits non-zero on a miss; its `check`/`figure` lines (benchmarks/verdict.py) become rows of the table, and for a
script without them, its lines that name a target do. `--quick` passes --quick to the scripts that take it: a
smoke run whose size-bound figures are `not measured`. The table's title names the machine (cores, CPU model, GPU).
Exits 1 when any benchmark failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECK = re.compile(r"^check (?P<name>.+?): (?P<value>.*) \(target (?P<target>.+)\) (?P<verdict>met|MISSED|not measured)$")
FIGURE = re.compile(r"^figure (?P<name>.+?): (?P<value>.*)$")


@dataclass
class Outcome:
    script: str
    seconds: float = 0.0
    verdict: str = "FAIL (not run)"
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    """(figure, measured, target, verdict)"""


def benchmarks(only: list[str], skip: list[str]) -> list[Path]:
    found = [p for p in sorted(HERE.glob("*.py")) if p.name != Path(__file__).name and 'if __name__ == "__main__":' in p.read_text()]
    names = {p.stem for p in found}
    for name in [*only, *skip]:
        if name.removesuffix(".py") not in names:
            raise SystemExit(f"error: no benchmark {name} in {HERE}. Pick from: {', '.join(sorted(names))}")
    chosen = [p for p in found if not only or p.stem in {n.removesuffix('.py') for n in only}]
    return [p for p in chosen if p.stem not in {n.removesuffix('.py') for n in skip}]


def machine() -> str:
    """Cores, CPU model and GPU of this machine, as the table's title shows them."""
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = "none"
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, check=False)
        names = [n.strip() for n in out.stdout.splitlines() if n.strip()]
        gpu = ", ".join(names) if out.returncode == 0 and names else "none"
    return f"{cores} cores ({usable} usable), {cpu}, GPU: {gpu}"


def run_one(script: Path, quick: bool, timeout: float | None) -> Outcome:
    """Run a benchmark with its output shown as it comes, and read its verdict lines."""
    args = [sys.executable, str(script)]
    if quick and '"--quick"' in script.read_text():
        args.append("--quick")
    outcome = Outcome(script.stem)
    print(f"== {script.name} {' '.join(args[2:])}", flush=True)
    started = time.perf_counter()
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+") as errors:
        proc = subprocess.Popen(args, cwd=HERE.parent, stdout=subprocess.PIPE, stderr=errors, text=True, bufsize=1)
        assert proc.stdout is not None  # noqa: S101 - set by stdout=PIPE
        # A watchdog, since a hung benchmark may print nothing that a read loop could time out on.
        watchdog = threading.Timer(timeout, proc.kill) if timeout else None
        if watchdog is not None:
            watchdog.start()
        for line in proc.stdout:
            print("   " + line.rstrip(), flush=True)
            lines.append(line.rstrip())
        proc.wait()
        if watchdog is not None:
            watchdog.cancel()
        errors.seek(0)
        tail = [e for e in errors.read().splitlines() if e.strip()][-1:]
    outcome.seconds = time.perf_counter() - started
    if timeout and outcome.seconds >= timeout:
        outcome.verdict = f"FAIL (timed out after {timeout:g} s)"
        return outcome
    for line in lines:
        if match := CHECK.match(line):
            outcome.rows.append((match["name"], match["value"], match["target"], match["verdict"]))
        elif match := FIGURE.match(line):
            outcome.rows.append((match["name"], match["value"], "–", "reported"))
    if not outcome.rows:  # a script without check lines: its lines that name a target
        outcome.rows = [(line.strip(), "", "", "") for line in lines if "target" in line.lower() and not line.startswith(("PASS", "FAIL"))]
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    if last.startswith(("PASS", "FAIL")) and (last == "PASS") == (proc.returncode == 0):
        outcome.verdict = last
    elif proc.returncode == 0:
        outcome.verdict = "FAIL (exited 0 without a PASS line)"
    else:
        outcome.verdict = f"FAIL (exit {proc.returncode}: {tail[0][:160] if tail else 'no output'})"
    return outcome


def table(outcomes: list[Outcome]) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for o in outcomes:
        label = f"{o.script} ({o.seconds:.0f} s)"
        for figure, value, target, verdict in o.rows:
            rows.append((label, figure, value, target, verdict or ("met" if o.verdict == "PASS" else "")))
            label = ""
        rows.append((label, "", "", "", o.verdict))
    return rows


def print_table(rows: list[tuple[str, str, str, str, str]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Table("benchmark", "figure", "measured", "target", "verdict", title=title, title_justify="left")
    for row in rows:
        out.add_row(*row, end_section=row[1] == "")
    Console(width=max(120, shutil.get_terminal_size().columns)).print(out)


def markdown(rows: list[tuple[str, str, str, str, str]], title: str) -> str:
    cell = lambda text: text.replace("|", "\\|")  # noqa: E731
    lines = [f"{title}", "", "| benchmark | figure | measured | target | verdict |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke runs: pass --quick to every benchmark that takes it")
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME", help="run only these benchmarks")
    parser.add_argument("--skip", nargs="+", default=[], metavar="NAME", help="leave these benchmarks out")
    parser.add_argument("--timeout", type=float, default=None, help="seconds one benchmark may take before it counts as failed")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table as Markdown to this file")
    args = parser.parse_args()
    scripts = benchmarks(args.only, args.skip)
    title = f"make bench{' --quick' if args.quick else ''}, {dt.date.today().isoformat()}, on {machine()}"
    outcomes = [run_one(script, args.quick, args.timeout) for script in scripts]
    rows = table(outcomes)
    print()
    print_table(rows, title)
    if args.markdown:
        args.markdown.write_text(markdown(rows, title), encoding="utf-8")
    failed = [o.script for o in outcomes if o.verdict != "PASS"]
    print("PASS" if not failed else f"FAIL {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
