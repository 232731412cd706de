"""Size and speed of `llamaduo report` on a realistic run, and a headless-Chromium check of what it draws.

    .venv/bin/python benchmarks/report_render.py [--iterations 5] [--answers 200] [--screenshot report.png]

Builds a run folder with the stages' real records (baseline + N iterations, M answers each, two judges), renders the
report twice (cold: first matplotlib use in the process; warm), then loads it in Chromium (if /usr/bin/chromium exists)
and prints the load time, console errors and how many images decoded.
Targets: a warm render <= 10 s; in Chromium, no console error and every image decoded (not measured without Chromium).
Ends with PASS or FAIL <which target> and exits 1 on a miss.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_WARM_S = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--answers", type=int, default=200)
    parser.add_argument("--screenshot", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 iterations of 40 answers")
    args = parser.parse_args()
    if args.quick:
        args.iterations, args.answers = 2, 40
    sys.path.insert(0, str(REPO))
    from verdict import Verdicts  # benchmarks/verdict.py (this script's folder is on sys.path)

    verdicts = Verdicts()
    from llamaduo.report.api import build_report
    from tests.report import browser
    from tests.report.runfixture import make_run, project_config

    with tempfile.TemporaryDirectory() as tmp:
        config = project_config(Path(tmp), report__samples=12)
        make_run(config, "bench", iterations=args.iterations, n=args.answers)
        cold = build_report(config, "bench")
        started = time.perf_counter()
        warm = build_report(config, "bench")
        wall = time.perf_counter() - started
        md = Path(warm.markdown_path).stat().st_size
        print(f"run: {args.iterations} iterations + baseline, {args.answers} answers each, 2 judges")
        print(f"report.html {warm.html_bytes / 1024:.0f} KiB, report.md {md / 1024:.1f} KiB")
        print(f"render: cold {cold.seconds:.2f} s, warm {warm.seconds:.2f} s (wall {wall:.2f} s)")
        verdicts.check(f"report render, warm ({args.iterations} iterations x {args.answers} answers)", f"{warm.seconds:.2f} s",
                       f"<= {TARGET_WARM_S:g} s", warm.seconds <= TARGET_WARM_S)
        if not browser.available():
            for name, target in (("Chromium console errors", "0"), ("images decoded in Chromium", "all")):
                verdicts.not_measured(name, target, "/usr/bin/chromium absent")
            verdicts.finish()
        page = browser.load_page(Path(warm.html_path).as_uri())
        ok = sum(1 for i in page.images if i["w"] > 0)
        print(f"chromium: loaded in {page.load_seconds:.2f} s, {len(page.console_errors)} console errors, "
              f"{ok}/{len(page.images)} images decoded, screenshot {len(page.screenshot) / 1024:.0f} KiB")
        verdicts.check("Chromium console errors", str(len(page.console_errors)), "0", not page.console_errors)
        verdicts.check("images decoded in Chromium", f"{ok}/{len(page.images)}", "all", ok == len(page.images) > 0)
        if args.screenshot:
            args.screenshot.write_bytes(page.screenshot)
            print(f"screenshot: {args.screenshot}")
    verdicts.finish()


if __name__ == "__main__":
    main()
