"""Training the tiny model for real: weights move, outputs are laid out for inference/serving, a kill resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from llamaduo.errors import LlamaduoError
from llamaduo.train import train
from tests.tiny import build_tiny_model, chats
from tests.train.conftest import tiny_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("lora")
    return train(tiny_config(workdir, tiny_model), examples=chats(16)), workdir


def test_lora_run_moves_weights_and_saves_everything_inference_needs(trained, tiny_model):
    result, workdir = trained
    out = Path(result.output_dir)
    assert {"adapter", "merged", "checkpoints", "fingerprint.json", "metrics.jsonl"} <= {p.name for p in out.iterdir()}
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapter.items())  # B starts at zero; training moved it
    base, merged = load_file(tiny_model / "model.safetensors"), load_file(out / "merged" / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(base[name], merged[name])
    tok = AutoTokenizer.from_pretrained(out / "merged")
    assert tok.chat_template == AutoTokenizer.from_pretrained(tiny_model).chat_template  # marker-free, same text
    generation = json.loads((out / "merged" / "generation_config.json").read_text())
    assert generation["eos_token_id"] == tok.convert_tokens_to_ids("<|im_end|>") and tok.eos_token == "<|im_end|>"
    fp = result.fingerprint
    assert fp["base_model"] == str(tiny_model) and fp["data"]["examples"] == 16 and len(fp["config_hash"]) == 16
    assert json.loads((out / "merged" / "fingerprint.json").read_text())["id"] == fp["id"]
    # The run-time CPU choices are recorded with the model they produced.
    assert fp["device"]["sampler"] == "group_by_length" and fp["device"]["allocator"] in ("glibc-heap-kept", "default")
    assert fp["device"]["loss_head"] == ("labelled-positions" if fp["device"]["use_cpu"] else "trl-fused")
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]


def test_metrics_are_logged_into_the_run(trained):
    result, workdir = trained
    events = [json.loads(line) for line in (workdir / "runs" / result.run_id / "events.jsonl").read_text().splitlines()]
    logs = [e for e in events if e["event"] == "train_metrics" and "loss" in e]
    assert len(logs) == 4 and all(e["tokens_per_s"] > 0 for e in logs) and max(e["learning_rate"] for e in logs) > 0
    assert logs[-1]["loss"] < logs[0]["loss"]
    assert any(e["event"] == "train_finished" and e["fingerprint"] == result.fingerprint["id"] for e in events)


def test_a_finished_run_is_not_trained_again(trained, tiny_model):
    result, workdir = trained
    from llamaduo.runs import RunFolder

    again = train(tiny_config(workdir, tiny_model), examples=chats(16), run=RunFolder(workdir / "runs" / result.run_id))
    assert again.fingerprint["id"] == result.fingerprint["id"]


def test_killed_training_resumes_from_its_last_complete_checkpoint(tiny_model, tmp_path):
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(e.model_dump_json() + "\n" for e in chats(16)))
    args = [sys.executable, "-m", "llamaduo.train", "--data", str(data), "--run", "killed", "-q",
            "--set", f"project.workdir={tmp_path}", "--set", f"train.base_model={tiny_model}", "--set", "train.max_steps=400",
            "--set", "train.save_steps=2", "--set", "train.batch_size=2", "--set", "train.max_seq_len=128"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "runs" / "killed" / "train" / "checkpoints"
    deadline = time.monotonic() + 240
    while not list(checkpoints.glob("checkpoint-2/trainer_state.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(checkpoints.glob("checkpoint-*/trainer_state.json")), "training never wrote a checkpoint"
    torn = checkpoints / "checkpoint-999"  # what a kill in the middle of saving leaves: weights, no trainer state
    torn.mkdir()
    (torn / "adapter_model.safetensors").write_bytes(b"partial")
    newest = max(int(p.parent.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*/trainer_state.json"))
    from llamaduo.runs import RunFolder

    cfg = tiny_config(tmp_path, tiny_model, max_steps=newest + 2, batch_size=2)
    result = train(cfg, examples=chats(16), run=RunFolder(tmp_path / "runs" / "killed"), resume=True)
    assert result.resumed_from and result.resumed_from.endswith(f"checkpoint-{newest}")
    assert not torn.exists() and Path(result.merged_dir, "model.safetensors").is_file()
    state = json.loads((checkpoints / f"checkpoint-{newest + 2}" / "trainer_state.json").read_text())
    assert state["global_step"] == newest + 2


def test_full_fine_tuning_of_a_base_model_with_chatml(tmp_path):
    base = build_tiny_model(tmp_path / "base", template=None)
    result = train(tiny_config(tmp_path, base, method="full", chat_template="chatml", max_steps=2, learning_rate=1e-3), examples=chats(8))
    assert result.adapter_dir is None
    tok = AutoTokenizer.from_pretrained(result.merged_dir)
    assert "<|im_start|>" in tok.chat_template and tok.eos_token == "<|im_end|>"
    merged = load_file(Path(result.merged_dir) / "model.safetensors")
    assert merged["model.embed_tokens.weight"].shape[0] == len(tok)  # resized for the two ChatML tokens


def test_resume_without_checkpoint_and_qlora_on_cpu_are_one_line_errors(tiny_model, tmp_path):
    with pytest.raises(LlamaduoError, match="no complete checkpoint"):
        train(tiny_config(tmp_path, tiny_model), examples=chats(4), resume=True)
    if not torch.cuda.is_available():
        with pytest.raises(LlamaduoError, match="method=lora"):
            train(tiny_config(tmp_path, tiny_model, method="qlora"), examples=chats(4))


def test_out_of_memory_becomes_a_one_line_error():
    from llamaduo.train.trainer import _is_oom

    assert _is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert _is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't allocate memory"))
    assert not _is_oom(ValueError("bad shape"))
