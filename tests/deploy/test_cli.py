"""The deploy verbs at the command line: one-line errors, exit code 2, and `serve` over HTTP from a real process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from llamaduo.deploy.config import ServeConfig


def llamaduo(*args, cwd, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "llamaduo", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_missing_model_and_taken_port_are_one_line_errors(tmp_path, tiny_model):
    missing = llamaduo("serve", str(tmp_path / "nope"), cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [f"error: model path {tmp_path / 'nope'} does not exist. Pass a model folder, a .gguf file, or a run id from runs/."]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = llamaduo("serve", str(tiny_model), "--port", str(port), cwd=tmp_path)
        gw = llamaduo("gateway", "--mode", "capture", "--port", str(port), cwd=tmp_path, env={"OPENAI_API_KEY": "sk-x"})
    for result in (taken, gw):
        assert result.returncode == 2
        assert result.stderr.strip().splitlines()[-1] == f"error: port {port} on 127.0.0.1 is already in use. Pick another with --port, or stop the process using it."
    bad_engine = llamaduo("serve", str(tiny_model), "--engine", "onnx", cwd=tmp_path)
    assert bad_engine.returncode == 2 and "deploy.serve.engine" in bad_engine.stderr


def test_gateway_without_service_key_and_vllm_without_vllm(tmp_path, tiny_model):
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    result = subprocess.run([sys.executable, "-m", "llamaduo", "gateway", "--port", "0"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2 and "OPENAI_API_KEY is not set" in result.stderr
    vllm = llamaduo("serve", str(tiny_model), "--engine", "vllm", cwd=tmp_path)
    if vllm.returncode == 2:
        assert vllm.stderr.strip().splitlines() == ["error: vLLM is not installed. Install it with `pip install vllm` on a CUDA machine, or use --engine transformers or llamacpp."]
    else:
        pytest.skip("vLLM is installed here; its launch is exercised on a GPU machine")


def test_vllm_command_line_is_built_from_the_settings(tmp_path):
    from llamaduo.deploy.serve import vllm_command

    cmd = vllm_command(tmp_path, ServeConfig(port=8123, context_length=2048, concurrency=8, vllm_args=["--dtype", "half"]), "my-model")
    assert cmd[cmd.index("serve") + 1] == str(tmp_path)
    joined = " ".join(cmd)
    assert "--port 8123" in joined and "--served-model-name my-model" in joined and "--max-model-len 2048" in joined
    assert joined.endswith("--max-num-seqs 8 --dtype half")


def test_serve_process_answers_and_export_log_cli(tmp_path, tiny_model):
    proc = subprocess.Popen([sys.executable, "-m", "llamaduo", "serve", str(tiny_model), "--port", "0", "--model-name", "cli-tiny"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving cli-tiny (transformers, in a worker process) on http://127.0.0.1:")
        url = line.split(" on ")[1].split()[0]
        reply = httpx.post(f"{url}/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}, timeout=60)
        assert reply.status_code == 200 and reply.json()["model"] == "cli-tiny"
    finally:
        proc.terminate()
        # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells the supervisor why.
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    exported = llamaduo("gateway", "--export-log", "log.jsonl", cwd=tmp_path, env={"OPENAI_API_KEY": "sk-x"})
    assert exported.returncode == 0 and "wrote 0 captured pairs" in exported.stdout and (tmp_path / "log.jsonl").exists()
