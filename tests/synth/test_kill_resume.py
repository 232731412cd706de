"""A real `kill -9` of `llamaduo synth` mid-run, then a re-run: every accepted pair kept once, paid calls not repeated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from llamaduo.atomic import read_jsonl
from llamaduo.data import DatasetStore
from llamaduo.synth import run_synth
from llamaduo.synth.engine import STATE_DIR
from tests.synth.conftest import Generator

REPO = Path(__file__).resolve().parents[2]


def test_kill_9_then_resume(synth_config, fake_service, tmp_path):
    fake_service.responder = Generator()
    fake_service.latency_s = 0.15  # slow enough that the kill lands between calls
    cfg = tmp_path / "llamaduo.yaml"
    cfg.write_text(yaml.safe_dump(synth_config.model_dump(mode="json")), encoding="utf-8")
    accepted_log = synth_config.path("runs") / "killed" / STATE_DIR / "accepted.jsonl"
    child = subprocess.Popen(
        [sys.executable, "-c", "from llamaduo.cli import main; main()", "synth", "-n", "24", "--task", "coding", "--run", "killed", "-c", str(cfg), "-q"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO / "src")}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None and len(read_jsonl(accepted_log)) < 6:
        time.sleep(0.05)
    assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    before = [r["example"]["id"] for r in read_jsonl(accepted_log)]
    paid_before = fake_service.count("openai.chat")
    assert 6 <= len(before) < 24
    fake_service.latency_s = 0.0
    report = run_synth(synth_config, 24, task="coding", run="killed")
    ids = [r["example"]["id"] for r in read_jsonl(accepted_log)]
    assert report.accepted == 24 and len(ids) == len(set(ids)) == 24 and ids[: len(before)] == before
    # 3 pairs a call: the rest needs (24 - accepted) / 3 calls, plus at most one that was in flight at the kill
    assert fake_service.count("openai.chat") - paid_before <= (24 - len(before)) // 3 + 1
    assert len(DatasetStore(synth_config.path("data")).examples("synthetic")) == 24
