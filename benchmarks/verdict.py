"""The verdict lines a benchmark ends with, which benchmarks/run_all.py (`make bench`) gathers into one table.

    check <figure>: <measured> (target <target>) met|MISSED|not measured
    figure <figure>: <measured>                    (a figure reported without a target)
    ...
    PASS                              or    FAIL <figure> <target>; ...

The script exits 1 when a target is missed. A figure a run could not measure (a part skipped by --quick, a browser
that is not installed) is printed as `not measured`: it fails nothing, and says so instead of passing quietly.
"""

from __future__ import annotations

import sys
from typing import NoReturn

LINE = "check {name}: {value} (target {target}) {verdict}"
FIGURE = "figure {name}: {value}"


class Verdicts:
    def __init__(self) -> None:
        self.missed: list[str] = []

    def check(self, name: str, value: str, target: str, ok: bool) -> bool:
        print(LINE.format(name=name, value=value, target=target, verdict="met" if ok else "MISSED"), flush=True)
        if not ok:
            self.missed.append(f"{name} {target}")
        return ok

    def figure(self, name: str, value: str) -> None:
        print(FIGURE.format(name=name, value=value), flush=True)

    def not_measured(self, name: str, target: str, why: str) -> None:
        print(LINE.format(name=name, value=why, target=target, verdict="not measured"), flush=True)

    def finish(self) -> NoReturn:
        print("PASS" if not self.missed else "FAIL " + "; ".join(self.missed), flush=True)
        sys.exit(1 if self.missed else 0)
