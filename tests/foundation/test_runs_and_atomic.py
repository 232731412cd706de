"""Run folders and atomic writes."""

from __future__ import annotations

import importlib.metadata
import json
import os

import pytest

from llamaduo.atomic import PRIVATE, append_line, atomic_path, atomic_write_json, atomic_write_text, read_jsonl
from llamaduo.config import load_config
from llamaduo.errors import LlamaduoError
from llamaduo.runs import RunFolder


def test_atomic_write_leaves_no_partial_file_on_error(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_writes_honour_the_umask_and_keep_an_existing_mode(tmp_path):
    old = os.umask(0o022)
    try:
        fresh = atomic_write_text(tmp_path / "a.txt", "x")
        assert fresh.stat().st_mode & 0o777 == 0o644  # as open() would make it; mkstemp would give 0600
        os.umask(0o007)
        assert atomic_write_text(tmp_path / "b.txt", "x").stat().st_mode & 0o777 == 0o660
        with atomic_path(tmp_path / "c.parquet", suffix=".parquet") as tmp:
            assert tmp.stat().st_mode & 0o777 == 0o660 and tmp.name.startswith(".c.parquet.")
        fresh.chmod(0o600)  # the user made it private: a rewrite keeps it so
        assert atomic_write_text(fresh, "y").stat().st_mode & 0o777 == 0o600 and fresh.read_text() == "y"
        os.umask(0)
        secret = atomic_write_text(tmp_path / "secret", "k", mode=PRIVATE)
        assert secret.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "c.parquet", "secret"]  # no temp file left


def test_jsonl_reader_skips_a_torn_last_line(tmp_path):
    log = tmp_path / "events.jsonl"
    append_line(log, json.dumps({"n": 1}))
    with open(log, "a") as fh:
        fh.write('{"n": 2, "trunc')
    assert read_jsonl(log) == [{"n": 1}]
    append_line(log, json.dumps({"n": 3}))
    assert read_jsonl(log) == [{"n": 1}, {"n": 3}]


def test_run_folder_manifest_has_no_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_SECRET_KEY_VALUE", "sk-live-abcdef123456")
    cfg = load_config(data={"service": {"generator": {"api_key_env": "MY_SECRET_KEY_VALUE"}}})
    run = RunFolder.create(tmp_path / "runs", cfg, run_id="r1", seeds={"split": 42}, data_hashes={"test": "abc"})
    run.event("stage_started", stage="synth")
    manifest = run.manifest
    assert manifest["run_id"] == "r1"
    assert manifest["seeds"] == {"split": 42}
    # Versions of installed tracked packages are recorded as installed (llamaduo and openai are always installed).
    assert manifest["packages"]["llamaduo"] == importlib.metadata.version("llamaduo")
    assert manifest["packages"]["openai"] == importlib.metadata.version("openai")
    assert manifest["config"]["service"]["generator"]["api_key_env"] == "MY_SECRET_KEY_VALUE"
    assert [e["event"] for e in run.events()] == ["run_created", "stage_started"]
    for path in (tmp_path / "runs").rglob("*"):
        if path.is_file():
            assert "sk-live-abcdef123456" not in path.read_text()


def test_run_folder_refuses_to_overwrite_and_opens_existing(tmp_path):
    cfg = load_config(data={})
    RunFolder.create(tmp_path, cfg, run_id="r1")
    with pytest.raises(LlamaduoError, match="already exists"):
        RunFolder.create(tmp_path, cfg, run_id="r1")
    assert RunFolder.open(tmp_path, "r1").run_id == "r1"
    with pytest.raises(LlamaduoError, match="no run"):
        RunFolder.open(tmp_path, "nope")
    assert not any(p.name.startswith(".") for p in (tmp_path / "r1").iterdir() if p.suffix == ".tmp")
    assert os.listdir(tmp_path) == ["r1"]
