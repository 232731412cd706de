"""The `llamaduo train` command: bad input gives one line and exit 2; `--launch ddp` trains with 2 gloo processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny import chats

LLAMADUO = [sys.executable, "-c", "import sys; from llamaduo.cli import main; sys.argv[0] = 'llamaduo'; main()"]


def run_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([*LLAMADUO, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def write_chats(path: Path, n: int = 16, *, answers: bool = True) -> Path:
    rows = chats(n)
    if not answers:
        rows = [e.model_copy(update={"messages": e.messages[:1]}) for e in rows]
    path.write_text("".join(e.model_dump_json() + "\n" for e in rows))
    return path


@pytest.mark.parametrize(
    "case, expected",
    [
        ("no_answers", "ends with an assistant answer"),
        ("overflow", "train.max_seq_len"),
        ("missing_model", "not reachable|HF_HUB_OFFLINE"),
        ("qlora_cpu", "train.method=lora"),
        ("resume_nothing", "no interrupted training run"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(case, expected, tiny_model, tmp_path, monkeypatch, capsys):
    import re

    from llamaduo.cli import main

    import torch

    if case == "qlora_cpu" and torch.cuda.is_available():
        pytest.skip("QLoRA is allowed on GPU")
    data = write_chats(tmp_path / "d.jsonl", 4, answers=case != "no_answers")
    sets = {"train.base_model": str(tiny_model), "train.max_steps": "1"}
    extra = []
    if case == "overflow":
        sets["train.max_seq_len"] = "16"
    if case == "missing_model":
        sets["train.base_model"] = "nobody-here/no-such-model-xyz"
    if case == "qlora_cpu":
        sets["train.method"] = "qlora"
    if case == "resume_nothing":
        extra = ["--resume"]
    args = ["train", "--data", str(data), *extra]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["llamaduo", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert exit_info.value.code == 2, err[-2000:]
    assert lines[-1].startswith("error: ") and re.search(expected, lines[-1]) and "Traceback" not in err


def test_ddp_on_cpu_with_two_gloo_processes(tiny_model, tmp_path):
    data = write_chats(tmp_path / "d.jsonl", 16)
    proc = run_cli(
        "train", "--data", str(data), "--launch", "ddp", "--num-processes", "2", "--run", "ddp", "-q",
        "--set", f"train.base_model={tiny_model}", "--set", "train.max_steps=2", "--set", "train.batch_size=2",
        "--set", "train.max_seq_len=128", "--set", "train.merge=false", cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "runs" / "ddp" / "train"
    fingerprint = json.loads((out / "fingerprint.json").read_text())
    assert fingerprint["world_size"] == 2 and fingerprint["device"]["device"] == "cpu"
    state = json.loads((out / "checkpoints" / "checkpoint-2" / "trainer_state.json").read_text())
    # 2 steps x 2 processes x batch 2 = 8 examples: the two processes read different shards.
    assert state["global_step"] == 2 and fingerprint["metrics"]["num_input_tokens_seen"] > 0
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
