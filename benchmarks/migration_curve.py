"""The migration curve: the paper's Fig. 2 on real data, on a CPU. The student improves as service-quality data grows.

The student (SmolLM2-135M-Instruct) is fine-tuned with `llamaduo.train` on nested subsets (128 of 512 of ...) of
service-quality answers, answers frozen test items greedily through the engine layer (`llamaduo.infer`), and is
scored judge-free with the metric registry and the sandbox; size 0 is the base model:

    summarization  Dolly summarization, human-written answers (CC BY-SA 3.0)   ROUGE-L F1 on held-out Dolly items
    closed_qa      Dolly closed QA, human-written answers (CC BY-SA 3.0)       SQuAD token F1 on held-out Dolly items
    coding         GPTeacher Codegen-Instruct Python rows, GPT-4 answers (MIT)  pass@1 on MBPP test tasks (CC BY 4.0),
                                                                                unit tests run in the sandbox

Target: the largest size beats the base model with non-overlapping bootstrap 95% CIs on at least 2 tasks.
Writes curve.json, curve.md, curve.png and curve.html into --out (after every stage, marked partial until the end).
Each (task, size) stage is cached there (training through train()'s own finished-run check and checkpoints, answers,
scores), so a killed run resumes where it stopped. `llamaduo report --curve OUT/curve.json` renders it again.

    .venv/bin/python benchmarks/migration_curve.py [--sizes 0 128 512] [--tasks summarization closed_qa coding]
                                                   [--test-items 100] [--epochs 1] [--max-seq-len 384] [--out DIR]
    .venv/bin/python benchmarks/migration_curve.py --quick    # smoke run: sizes 0 8, 8 test items, 32 new tokens
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
STUDENT = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_OUT = HERE / "out" / "migration_curve"
QUICK_OUT = HERE / "out" / "migration_curve_quick"
_PYTHON = re.compile(r"\bpython\b", re.IGNORECASE)
_DEF = re.compile(r"^\s*def \w+\(", re.MULTILINE)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    metric: str
    """A name in llamaduo.evaluate.metrics.METRICS."""
    label: str
    max_new_tokens: int
    """About the 90th percentile of the reference answers' length (summaries 129, closed QA 62, MBPP code 125 tokens)."""
    train_data: str
    test_data: str
    license: str


TASKS = {
    "summarization": TaskSpec("summarization", "rouge_l", "ROUGE-L F1", 96, "dolly/dolly_summarization.jsonl (human-written)",
                              "held-out rows of the same file", "Dolly: CC BY-SA 3.0"),
    "closed_qa": TaskSpec("closed_qa", "token_f1", "token F1", 64, "dolly/dolly_closed_qa.jsonl (human-written)",
                          "held-out rows of the same file", "Dolly: CC BY-SA 3.0"),
    "coding": TaskSpec("coding", "pass_at_k", "pass@1", 192, "gpteacher_code/codegen-instruct.json, Python rows (GPT-4 answers)",
                       "mbpp/mbpp_test_500.jsonl (unit tests in the sandbox)", "GPTeacher: MIT; MBPP: CC BY 4.0"),
}


# ---- data: pure helpers (tests/report/test_migration_curve_data.py) -------------------------------------------


def chat_example(task: str, user: str, answer: str, metadata: dict[str, Any] | None = None) -> Any:
    from llamaduo.records import Example, Message

    messages = [Message(role="user", content=user), Message(role="assistant", content=answer)]
    return Example(id=Example.content_id(task, messages), task=task, messages=messages, source="migration_curve", metadata=metadata or {})


def dolly_examples(path: Path, task: str) -> list[Any]:
    """Dolly rows as chats; `group` is the passage, so no training row shares a test item's passage."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [chat_example(task, f"{r['instruction']}\n\n{r['context']}".strip(), r["response"], {"group": r["context"].strip() or r["instruction"]})
            for r in rows]


def gpteacher_python(path: Path) -> list[Any]:
    """GPTeacher's GPT-4 coding answers whose instruction asks for Python and whose answer defines a function (MBPP's shape)."""
    rows = json.loads(path.read_text(encoding="utf-8"))
    return [chat_example("coding", f"{r['instruction']}\n\n{r['input']}".strip(), r["response"], {"group": r["instruction"]})
            for r in rows if _PYTHON.search(r["instruction"]) and _DEF.search(r["response"])]


def mbpp_prompt(row: dict[str, Any]) -> str:
    """The task and its first test, as MBPP papers prompt: the assert names the function and its signature."""
    return f"{row['text']}\nYour code should pass this test:\n{row['test_list'][0]}"


def mbpp_examples(path: Path) -> list[Any]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [chat_example("coding", mbpp_prompt(r), r["code"].replace("\r\n", "\n"),
                         {"task_id": r["task_id"], "test_list": r["test_list"], "test_setup_code": r.get("test_setup_code") or "", "group": r["text"]})
            for r in rows]


def _group(example: Any) -> str:
    return " ".join(str(example.metadata.get("group") or example.instruction).lower().split())


def _unique(examples: Sequence[Any]) -> list[Any]:
    seen: set[str] = set()
    return [e for e in examples if not (e.id in seen or seen.add(e.id))]


def frozen_split(pool: Sequence[Any], test_items: int, seed: int, test_pool: Sequence[Any] | None = None) -> tuple[list[Any], list[Any]]:
    """(test items, training order): a seeded shuffle; the test items come first from `test_pool` (default: `pool`),
    and training rows sharing a test item's prompt group (its passage or instruction) are left out."""
    order = _unique(pool)
    random.Random(seed).shuffle(order)
    if test_pool is None:
        test, rest = order[:test_items], order[test_items:]
    else:
        candidates = _unique(test_pool)
        random.Random(seed).shuffle(candidates)
        test, rest = candidates[:test_items], order
    if len(test) < test_items:
        from llamaduo.errors import LlamaduoError

        raise LlamaduoError(f"only {len(test)} test items are available, fewer than --test-items {test_items}", "Lower --test-items or raise --max-seq-len.")
    held = {_group(e) for e in test}
    return test, [e for e in rest if _group(e) not in held]


def nested_subsets(train: Sequence[Any], sizes: Sequence[int]) -> dict[int, list[Any]]:
    """Each size's training set is a prefix of the same order, so 128 is inside 512 and so on."""
    return {size: list(train[:size]) for size in sorted(set(sizes))}


def parse_sizes(values: Sequence[str]) -> list[int]:
    sizes = sorted({int(v) for value in values for v in value.split(",") if v.strip()})
    if not sizes or sizes[0] < 0:
        raise SystemExit("error: --sizes takes whole numbers >= 0, e.g. --sizes 0 128 512")
    return sizes if sizes[0] == 0 else [0, *sizes]  # the base model is the curve's reference point


def failure_kind(status: str) -> str:
    """`failed: NameError: name 'x' is not defined` -> NameError; `timeout: ...` -> timeout."""
    state, _, reason = status.partition(": ")
    return (reason.split(":")[0].strip() or "failed")[:40] if state == "failed" else state


# ---- the run ---------------------------------------------------------------------------------------------------


@dataclass
class TaskData:
    spec: TaskSpec
    test: list[Any]
    train: list[Any]
    lengths: dict[str, int]
    """example id -> tokens of the whole chat (template included)."""


def log(started: float, message: str) -> None:
    print(f"[{time.perf_counter() - started:7.0f} s] {message}", flush=True)


def fitting(examples: list[Any], tokenizer: Any, template: str, max_len: int) -> tuple[list[Any], dict[str, int]]:
    """The examples whose chat fits max_len tokens, measured exactly as train() measures them (never truncated)."""
    from llamaduo.train.dataset import conversations, token_lengths

    lengths = token_lengths(conversations(examples), tokenizer, template)
    kept = [(e, n) for e, n in zip(examples, lengths, strict=True) if n <= max_len]
    return [e for e, _ in kept], {e.id: n for e, n in kept}


def load_tasks(names: list[str], args: argparse.Namespace) -> dict[str, TaskData]:
    from transformers import AutoTokenizer

    from llamaduo.loop.demo import find_shared_data
    from llamaduo.train.base_model import resolve_base_model
    from llamaduo.train.template import prepare_chat_template

    shared = find_shared_data(args.shared_data)
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(STUDENT))
    template = prepare_chat_template(tokenizer, "model").inference
    out = {}
    for name in names:
        if name == "coding":
            train_pool, test_pool = gpteacher_python(shared / "gpteacher_code" / "codegen-instruct.json"), mbpp_examples(shared / "mbpp" / "mbpp_test_500.jsonl")
        else:
            train_pool, test_pool = dolly_examples(shared / "dolly" / f"dolly_{name}.jsonl", name), None
        train_pool, lengths = fitting(train_pool, tokenizer, template, args.max_seq_len)
        if test_pool is not None:
            test_pool, _ = fitting(test_pool, tokenizer, template, args.max_seq_len)
        test, train = frozen_split(train_pool, args.test_items, args.seed, test_pool)
        out[name] = TaskData(TASKS[name], test, train, lengths)
    return out


def stage_config(out: Path, spec: TaskSpec, args: argparse.Namespace) -> Any:
    from llamaduo.config import load_config

    return load_config(data={
        "project": {"name": "curve", "workdir": str(out / "project")},
        # overflow=error: the length filter above already left out what does not fit, so nothing may be dropped here.
        "train": {"base_model": STUDENT, "epochs": args.epochs, "max_seq_len": args.max_seq_len, "overflow": "error", "batch_size": 4,
                  "save_steps": 25, "logging_steps": 10},
        "infer": {"backend": "transformers", "samples": 1, "max_new_tokens": max_new_tokens(spec, args), "batch_size": args.infer_batch},
        "evaluate": {"judge": False, "metrics": [spec.metric], "pass_k": [1], "bootstrap": 1000, "seed": 0},
    })


def max_new_tokens(spec: TaskSpec, args: argparse.Namespace) -> int:
    return min(spec.max_new_tokens, 32) if args.quick else spec.max_new_tokens


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """Everything that changes a cached stage's result; a rerun into the same --out must match it."""
    tc = stage_config(args.out, TASKS["summarization"], args).train
    return {
        "seed": args.seed, "test_items": args.test_items, "max_seq_len": args.max_seq_len,
        "length_filter": f"chats longer than {args.max_seq_len} tokens (template included) are left out before the split",
        "epochs": args.epochs, "batch_size": tc.batch_size, "learning_rate": tc.learning_rate, "lr_scheduler": tc.lr_scheduler,
        "lora": f"{tc.method}, rank by data size (8 up to 16k examples), dropout {tc.lora_dropout}, {tc.target_modules}",
        "decoding": f"greedy (K=1), transformers engine, batches of {args.infer_batch}",
        "max_new_tokens": {name: max_new_tokens(spec, args) for name, spec in TASKS.items()},
        "coding_train_rows": "GPTeacher rows whose instruction says Python and whose answer defines a function",
        "coding_prompt": "MBPP text + 'Your code should pass this test:' + its first assert; code from fenced blocks, else the whole answer",
        "bootstrap": "1000 resamples of the test items, percentile 95% CI, seed 0",
        "quick": args.quick,
    }


def run_stage(data: TaskData, size: int, args: argparse.Namespace, started: float) -> Any:
    """Train (size > 0), answer the test items and score them; each step's result is cached in the stage folder."""
    from llamaduo.atomic import atomic_write_text
    from llamaduo.evaluate.aggregate import summarize
    from llamaduo.infer import infer
    from llamaduo.infer.runner import read_answers
    from llamaduo.report.curve import CurvePoint
    from llamaduo.train import train
    from llamaduo.train.outputs import FINGERPRINT, last_checkpoint

    folder = args.out / data.spec.name / f"size-{size}"
    if (folder / "point.json").is_file():
        return CurvePoint.model_validate_json((folder / "point.json").read_text(encoding="utf-8"))
    config = stage_config(args.out, data.spec, args)
    point: dict[str, Any] = {"size": size, "seconds": {}}
    model = STUDENT
    if size:
        out = folder / "train"
        resume = not (out / FINGERPRINT).is_file() and last_checkpoint(out / "checkpoints") is not None
        log(started, f"{data.spec.name} {size}: training on {size} examples{' (resuming)' if resume else ''}")
        result = train(config, examples=data.train[:size], output_dir=out, resume=resume)
        m = result.metrics
        point.update(train_tokens=m.get("num_input_tokens_seen"), train_tokens_per_s=round(m["num_input_tokens_seen"] / m["train_runtime"], 1))
        point["seconds"]["train"] = m.get("wall_s")
        model = result.merged_dir
    answers_path, infer_file = folder / "answers.jsonl", folder / "infer.json"
    if not infer_file.is_file():
        log(started, f"{data.spec.name} {size}: answering {len(data.test)} test items (up to {config.infer.max_new_tokens} new tokens)")
        atomic_write_text(infer_file, infer(config, model, examples=data.test, output=answers_path).model_dump_json(indent=2))
    info = json.loads(infer_file.read_text(encoding="utf-8"))
    point.update(infer_tokens_per_s=info["tokens_per_s"])
    point["seconds"]["infer"] = info["wall_s"]
    answers = read_answers(answers_path)
    t0 = time.perf_counter()
    scores, failures = score(config, data, answers)
    summary = summarize(scores, [], resamples=config.evaluate.bootstrap, seed=config.evaluate.seed)
    point["seconds"]["score"] = round(time.perf_counter() - t0, 2)
    lo, hi = summary.interval("mean") or (None, None)
    result_point = CurvePoint(**point, n=summary.n, mean=summary.mean, ci_low=lo, ci_high=hi, failures=failures,
                              cut_at_max_tokens=sum(a.finish_reason == "length" for a in answers))
    atomic_write_text(folder / "scores.jsonl", "".join(json.dumps({"example_id": a.example_id, "score": s}) + "\n" for a, s in zip(answers, scores, strict=True)))
    atomic_write_text(folder / "point.json", result_point.model_dump_json(indent=2))
    return result_point


def score(config: Any, data: TaskData, answers: list[Any]) -> tuple[list[float], dict[str, int]]:
    """0-100 per test item through the evaluation code: the registry's metric, or pass@1 from the sandbox."""
    from llamaduo.evaluate.api import check_inputs
    from llamaduo.evaluate.metrics import get_metric
    from llamaduo.evaluate.offline import reference_scores, run_pass_at_k

    items, _, _ = check_inputs(config, answers, data.test)
    if data.spec.metric == "pass_at_k":
        passk = run_pass_at_k(items, config.evaluate)
        if passk is None:
            raise RuntimeError("no coding test item carries unit tests")
        kinds = Counter(failure_kind(s) for s in passk.statuses if s and s != "passed")
        return [100.0 * passk.per_prompt[it.answer.example_id][1] for it in items], dict(kinds)
    values = reference_scores(items, get_metric(data.spec.metric))
    if any(v is None for v in values):
        raise RuntimeError(f"{data.spec.metric} did not apply to every {data.spec.name} answer")
    return [float(v) for v in values if v is not None], {}


def build_curve(tasks: dict[str, TaskData], points: dict[str, list[Any]], args: argparse.Namespace, machine: str, complete: bool, total_s: float) -> Any:
    from llamaduo.report.curve import Curve, CurveTask

    return Curve(
        title="Migration curve", created_at=dt.datetime.now().astimezone().isoformat(timespec="seconds"), machine=machine,
        student=STUDENT, sizes=args.sizes, settings=settings(args), quick=args.quick, complete=complete, total_s=round(total_s, 1),
        tasks=[CurveTask(name=name, metric=d.spec.label, train_data=d.spec.train_data, test_data=d.spec.test_data, license=d.spec.license,
                         train_pool=len(d.train), max_new_tokens=max_new_tokens(d.spec, args), points=points[name]) for name, d in tasks.items()],
    )


def publish(curve: Any, out: Path) -> Any:
    """curve.json, then its Markdown table, PNG and HTML page (the renderer `llamaduo report --curve` uses)."""
    from llamaduo.atomic import atomic_write_text
    from llamaduo.report.curve import CURVE_FILE, write_curve_report

    atomic_write_text(out / CURVE_FILE, curve.model_dump_json(indent=2) + "\n")
    return write_curve_report(curve, out)


def check_settings(args: argparse.Namespace) -> None:
    """A cached stage is only reused by a run with the same settings (sizes and tasks may change: they add stages)."""
    from llamaduo.atomic import atomic_write_text
    from llamaduo.errors import LlamaduoError

    path, wanted = args.out / "settings.json", settings(args)
    if path.is_file():
        held = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(held) | set(wanted) if held.get(k) != wanted.get(k))
        if changed:
            raise LlamaduoError(f"{args.out} holds a run with other settings ({', '.join(changed)})",
                                "Pass another --out, or delete that folder to start over.")
    atomic_write_text(path, json.dumps(wanted, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=None, help="training sizes (0, the base model, is always added); default 0 128 512")
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=list(TASKS))
    parser.add_argument("--test-items", type=int, default=None, help="frozen test items per task (default 100)")
    parser.add_argument("--epochs", type=float, default=1.0, help="passes over each training subset, the same at every size")
    parser.add_argument("--max-seq-len", type=int, default=384, help="longest chat kept, in tokens")
    parser.add_argument("--infer-batch", type=int, default=16, help="prompts generated together")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffles that pick test items and training order")
    parser.add_argument("--out", type=Path, default=None, help=f"output and cache folder (default {DEFAULT_OUT.relative_to(HERE.parent)})")
    parser.add_argument("--shared-data", type=Path, default=None, help="the shared data folder (default ../shared/data)")
    parser.add_argument("--quick", action="store_true", help="smoke run: sizes 0 8, 8 test items, at most 32 new tokens")
    args = parser.parse_args(argv)
    args.sizes = parse_sizes(args.sizes or (["0", "8"] if args.quick else ["0", "128", "512"]))
    args.test_items = args.test_items or (8 if args.quick else 100)
    args.out = (args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)).resolve()
    os.environ.setdefault("LLAMADUO_QUIET", "1")  # no progress bars: this script prints its own progress lines
    sys.path.insert(0, str(HERE))
    from run_all import machine
    from verdict import Verdicts

    from llamaduo.errors import LlamaduoError
    from llamaduo.report.curve import CURVE_FILE, TASKS_TO_BEAT, curve_verdict

    started = time.perf_counter()
    try:
        check_settings(args)
        tasks = load_tasks(args.tasks, args)
        for name, d in tasks.items():
            if max(args.sizes) > len(d.train):
                raise LlamaduoError(f"{name} has {len(d.train)} training rows up to {args.max_seq_len} tokens, fewer than --sizes {max(args.sizes)}",
                                    "Lower the largest --sizes, raise --max-seq-len, or leave the task out with --tasks.")
            plan = ", ".join(f"{s}: {int(args.epochs * sum(d.lengths[e.id] for e in d.train[:s]))}" for s in args.sizes if s)
            log(started, f"{name}: {len(d.test)} test items, {len(d.train)} training rows; training tokens per size {{{plan}}}")
        where = machine()
        points: dict[str, list[Any]] = {name: [] for name in tasks}
        for size in args.sizes:  # every task's smaller sizes first, so a stopped run already has whole columns
            for name, d in tasks.items():
                p = run_stage(d, size, args, started)
                points[name].append(p)
                ci = f"[{p.ci_low:.1f}, {p.ci_high:.1f}]" if p.ci_low is not None else "(no interval)"
                log(started, f"{name} {size}: {d.spec.label} {p.mean:.1f} {ci} over {p.n} items; seconds {p.seconds}")
                publish(build_curve(tasks, points, args, where, False, time.perf_counter() - started), args.out)
    except LlamaduoError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    curve = build_curve(tasks, points, args, where, True, time.perf_counter() - started)
    written = publish(curve, args.out)
    print(f"wrote {args.out / CURVE_FILE}, {written.markdown_path}, {written.png_path}, {written.html_path}")
    passed, verdicts = curve_verdict(curve)
    verdict = Verdicts()
    for v, task in zip(verdicts, curve.tasks, strict=True):
        verdict.figure(f"{v.task}, largest size against the base model", v.text.split(": ", 1)[1])
        if not v.beats_base:  # the evidence a reader needs to say why: answers cut short, programs' failures
            top = max(task.points, key=lambda p: p.size)
            fails = ", ".join(f"{k} {n}" for k, n in sorted(top.failures.items(), key=lambda kv: -kv[1]))
            print(f"  {v.task} at {top.size}: {top.cut_at_max_tokens}/{top.n} answers cut at {task.max_new_tokens} tokens" + (f"; failures: {fails}" if fails else ""))
    name, target = "tasks where the largest size beats the base model (non-overlapping 95% CIs)", f">= {TASKS_TO_BEAT} of {len(verdicts)}"
    if args.quick:
        verdict.not_measured(name, target, f"a --quick run ({args.test_items} test items, sizes {args.sizes}) cannot support the claim")
    else:
        winners = [v.task for v in verdicts if v.beats_base]
        verdict.check(name, f"{len(winners)} of {len(verdicts)} ({', '.join(winners) or 'none'})", target, bool(passed))
    verdict.finish()


if __name__ == "__main__":
    sys.exit(main())
