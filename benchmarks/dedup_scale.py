"""Scale of the dedup + decontamination gates: exact, near-dup and test-overlap checks on 10k, 30k and 100k pairs.

    .venv/bin/python benchmarks/dedup_scale.py [--sizes 10000 30000 100000] [--cores 2] [--quick]

Pairs are built from the shared data (Dolly + GPTeacher sentences recombined), with planted near-duplicates
(case and punctuation noise plus word edits on ~3% of an earlier pair's words, at least one) and planted test leaks (a perturbed test item, or a
20-word span of one inside a new pair), against 400 frozen test items (100 per task). Each size runs in its own
process pinned to `--cores` cores, so its peak RSS is its own. Prints wall and CPU seconds (CPU time is the
steadier figure on a shared machine), peak MB, recalls, and checks the targets: 100k <= 60 s, <= 2048 MB,
time(100k)/time(10k) <= 12, recalls >= 0.95; it ends with PASS or FAIL and exits 1 on a miss.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from verdict import Verdicts  # benchmarks/verdict.py (this script's folder is on sys.path)

REPO = Path(__file__).resolve().parents[1]
TEST_PER_TASK = 100
NEAR_SHARE, LEAK_SHARE = 0.10, 0.02
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def shared_data() -> Path:
    for candidate in (os.environ.get("LLAMADUO_SHARED_DATA"), REPO.parent / "shared" / "data", REPO / "shared" / "data"):
        if candidate and (Path(candidate) / "README.md").is_file():
            return Path(candidate)
    sys.exit("../shared/data not found beside the repository (set LLAMADUO_SHARED_DATA)")


def load_rows() -> dict[str, list[tuple[str, str]]]:
    """(instruction side, response) per task, read through the ingest layouts."""
    from llamaduo.data.layouts import to_chat

    root = shared_data()
    files = {"summarization": "dolly/dolly_summarization.jsonl", "classification": "dolly/dolly_classification.jsonl",
             "closed_qa": "dolly/dolly_closed_qa.jsonl", "coding": "gpteacher_code/codegen-instruct.json"}
    rows: dict[str, list[tuple[str, str]]] = {}
    for task, rel in files.items():
        text = (root / rel).read_text(encoding="utf-8")
        raw = json.loads(text) if rel.endswith(".json") else [json.loads(line) for line in text.splitlines() if line.strip()]
        layout = "alpaca" if "gpteacher" in rel else "dolly"
        rows[task] = [(m[-2]["content"], m[-1]["content"]) for m, _ in (to_chat(layout, r) for r in raw)]
    return rows


def perturb(user: str, answer: str, rng: random.Random, edit_share: float = 0.03) -> tuple[str, str]:
    """A near copy of a pair: case and punctuation noise plus word edits (substitution, deletion or swap of
    neighbours) on about `edit_share` of its words, at least one, placed at random across both turns."""
    parts = [user.split(), answer.split()]
    total = len(parts[0]) + len(parts[1])
    for _ in range(max(1, round(total * edit_share))):
        words = parts[0] if rng.randrange(total) < len(parts[0]) else parts[1]
        if len(words) < 3:
            continue
        i = rng.randrange(len(words) - 1)
        kind = rng.random()
        if kind < 0.4:
            words[i] = rng.choice(["really", "quite", "some", "new", "other", "the"])
        elif kind < 0.7:
            del words[i]
        else:
            words[i], words[i + 1] = words[i + 1], words[i]
    lower = rng.random() < 0.5
    out = []
    for words in parts:
        text = " ".join(words)
        text = text.lower() if lower else text
        out.append(text.replace(".", " .") if rng.random() < 0.5 else text + "!")
    return out[0], out[1]


def build(size: int, seed: int = 0):
    from llamaduo.records import Example, Message

    rng = random.Random(seed)
    rows = load_rows()
    test_pairs, pool_rows = [], []
    for task, items in rows.items():
        shuffled = items[:]
        random.Random(f"test:{task}").shuffle(shuffled)
        test_pairs += [(task, *p) for p in shuffled[:TEST_PER_TASK]]
        pool_rows += [(task, *p) for p in shuffled[TEST_PER_TASK:]]
    test_text = " ".join(u + " " + a for _, u, a in test_pairs)
    sentences = sorted({s.strip() for _, u, a in pool_rows for s in _SENTENCE.split(u + "\n" + a) if len(s.split()) >= 4} - set(_SENTENCE.split(test_text)))
    sentences = [s for s in sentences if s not in test_text]

    def example(task: str, user: str, answer: str) -> Example:
        messages = [Message(role="user", content=user), Message(role="assistant", content=answer)]
        return Example(id=Example.content_id(task, messages), task=task, messages=messages)

    test = [example(t, u, a) for t, u, a in test_pairs]
    tasks = list(rows)
    pairs, kinds = [], []
    for _ in range(size):
        roll = rng.random()
        if roll < LEAK_SHARE:
            t, u, a = rng.choice(test_pairs)
            if rng.random() < 0.5:
                pairs.append(example(t, *perturb(u, a, rng)))
            else:
                words = (u + " " + a).split()
                start = rng.randrange(max(1, len(words) - 20))
                pairs.append(example(t, " ".join(rng.sample(sentences, 2)), " ".join(words[start : start + 20]) + " " + rng.choice(sentences)))
            kinds.append("leak")
        elif roll < LEAK_SHARE + NEAR_SHARE and any(k == "clean" for k in kinds):
            j = rng.randrange(len(pairs))
            while kinds[j] != "clean":
                j = rng.randrange(len(pairs))
            base = pairs[j]
            pairs.append(example(base.task, *perturb(base.instruction, base.reference or "", rng)))
            kinds.append("near")
        else:
            pairs.append(example(rng.choice(tasks), " ".join(rng.sample(sentences, rng.randint(1, 3))), " ".join(rng.sample(sentences, rng.randint(2, 6)))))
            kinds.append("clean")
    return pairs, kinds, test


def run_one(size: int) -> dict:
    from llamaduo.data.config import DataConfig
    from llamaduo.data.hygiene import GATE_DECONTAM, PairFilter

    pairs, kinds, test = build(size)
    started, cpu_started = time.perf_counter(), time.process_time()
    gate = PairFilter(DataConfig(), test)
    verdicts = gate.screen(pairs)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    near = [v for v, k in zip(verdicts, kinds, strict=True) if k == "near"]
    leaks = [v for v, k in zip(verdicts, kinds, strict=True) if k == "leak"]
    clean = [v for v, k in zip(verdicts, kinds, strict=True) if k == "clean"]
    return {
        "size": size, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "near_planted": len(near), "near_recall": round(sum(v is not None for v in near) / max(1, len(near)), 4),
        "leaks_planted": len(leaks), "leak_recall": round(sum(v is not None and v.gate == GATE_DECONTAM for v in leaks) / max(1, len(leaks)), 4),
        "clean_dropped": round(sum(v is not None for v in clean) / max(1, len(clean)), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="a smoke run on 2,000 and 5,000 pairs (the size targets are then not measured)")
    args = parser.parse_args()
    if args.quick:
        args.sizes = [2_000, 5_000]
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(args.cores), "OPENBLAS_NUM_THREADS": str(args.cores), "MKL_NUM_THREADS": str(args.cores)}
    cores = sorted(os.sched_getaffinity(0))[: args.cores]
    results = []
    for size in args.sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(size)], env=env, capture_output=True, text=True, check=True,
            preexec_fn=lambda: os.sched_setaffinity(0, cores),
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(result)
        print(f"{size:>7} pairs: {result['seconds']:6.1f} s wall ({result['cpu_seconds']:.1f} s CPU), peak {result['peak_mb']:7.1f} MB, near-dup recall {result['near_recall']:.3f} "
              f"({result['near_planted']} planted), leak recall {result['leak_recall']:.3f} ({result['leaks_planted']} planted), "
              f"clean pairs dropped {result['clean_dropped']:.3%}", flush=True)
    by_size = {r["size"]: r for r in results}
    verdicts = Verdicts()
    if 10_000 in by_size and 100_000 in by_size:
        big, small = by_size[100_000], by_size[10_000]
        ratio = big["seconds"] / small["seconds"]
        print(f"time(100k)/time(10k) = {ratio:.2f} wall, {big['cpu_seconds'] / small['cpu_seconds']:.2f} CPU")
        verdicts.check("time(100k)/time(10k), wall", f"{ratio:.2f}", "<= 12", ratio <= 12)
        verdicts.check("100k pairs, wall seconds", f"{big['seconds']:.1f}", "<= 60", big["seconds"] <= 60)
        verdicts.check("100k pairs, peak MB", f"{big['peak_mb']:.0f}", "<= 2048", big["peak_mb"] <= 2048)
    else:
        for name, target in (("time(100k)/time(10k), wall", "<= 12"), ("100k pairs, wall seconds", "<= 60"), ("100k pairs, peak MB", "<= 2048")):
            verdicts.not_measured(name, target, "needs sizes 10000 and 100000")
    near, leak = min(r["near_recall"] for r in results), min(r["leak_recall"] for r in results)
    verdicts.check("min near-duplicate recall", f"{near:.3f}", ">= 0.95", near >= 0.95)
    verdicts.check("min test-leak recall", f"{leak:.3f}", ">= 0.95", leak >= 0.95)
    verdicts.finish()


if __name__ == "__main__":
    main()
