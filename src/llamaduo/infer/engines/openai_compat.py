"""The openai engine: any OpenAI-compatible server (vLLM, SGLang, Ollama, TGI, llama-server, `llamaduo serve`).

It reaches the server through the service layer's OpenAI provider. Each endpoint gets its own client with
`concurrency` requests in flight and prompts are dealt out round-robin (data parallelism over several servers).
The response cache is off (a retrained model may be served under the same name) and the calls are local inference,
not service spend: they are recorded under stage `infer` and marked free.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from llamaduo.errors import LlamaduoError
from llamaduo.infer.engines import EngineSpec
from llamaduo.infer.engines.base import Engine, EngineError, Generation, GenParams, StepOut


class OpenAICompatEngine(Engine):
    name = "openai"

    def __init__(self, spec: EngineSpec, config: Any):
        from llamaduo.service.config import Limits, Price, ServiceModel

        endpoints = list(spec.options.get("endpoints") or [])
        if not endpoints:
            raise LlamaduoError("the openai engine needs at least one endpoint", "Set infer.endpoints, e.g. --set 'infer.endpoints=[http://localhost:8000/v1]'.")
        if config is None:
            raise LlamaduoError("the openai engine needs the project config", "Open it through llamaduo.infer.infer(config, ...).")
        self.model_id = spec.model_id or spec.model
        self.fingerprint = f"{spec.model}@" + ",".join(endpoints)
        self.context_length = spec.context_length or 0
        self.configs = []
        for url in endpoints:
            cfg = config.model_copy(deep=True)
            cfg._base_dir = config.base_dir
            cfg.service.cache = False
            cfg.service.generator = ServiceModel(
                provider="openai", model=spec.model, base_url=url, api_key_env=spec.options.get("api_key_env"), supports_n=False,
                limits=Limits(concurrency=int(spec.options.get("concurrency", 16))),
            )
            cfg.service.prices[spec.model] = Price(input=0.0, output=0.0)  # a local model costs no service dollars
            self.configs.append(cfg)

    # The server owns the template and the tokenizer: this engine answers whole chats only.
    def render_chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        return ""

    def tokenize(self, text: str) -> list[int]:
        raise EngineError("the openai engine does not tokenize locally; the server applies its own template")

    tokenize_plain = tokenize

    def decode(self, ids: list[int]) -> str:
        raise EngineError("the openai engine does not decode token ids")

    def generate(self, params: GenParams) -> Iterator[StepOut]:
        raise EngineError("the openai engine answers whole chats (answer_chats), not token streams")

    def answer_chats(self, chats: list[list[dict[str, Any]]], params: GenParams, samples: int = 1) -> list[list[Generation]]:
        from llamaduo.service import run_sync

        return run_sync(self._answer(chats, params, samples))

    async def _answer(self, chats: list[list[dict[str, Any]]], params: GenParams, samples: int) -> list[list[Generation]]:
        from llamaduo.service import ChatRequest, ServiceError, open_service

        body: dict[str, Any] = {"max_tokens": params.max_tokens, "seed": params.seed}
        body.update({"temperature": 0.0} if params.greedy else {"temperature": params.temperature, "top_p": params.top_p})
        jobs = [(i, k) for i in range(len(chats)) for k in range(samples)]
        shares: list[list[tuple[int, int]]] = [jobs[j :: len(self.configs)] for j in range(len(self.configs))]

        async def endpoint(cfg: Any, share: list[tuple[int, int]]) -> list[Any]:
            async with open_service(cfg, "generator") as client:
                requests = [ChatRequest(chats[i], params=body, sample=k) for i, k in share]
                return await client.chat_many(requests, stage="infer")

        replies = await asyncio.gather(*(endpoint(c, s) for c, s in zip(self.configs, shares, strict=True)))
        results: list[list[Generation | None]] = [[None] * samples for _ in chats]
        for share, answers in zip(shares, replies, strict=True):
            for (i, k), reply in zip(share, answers, strict=True):
                if isinstance(reply, ServiceError):
                    raise LlamaduoError(f"the endpoint failed on a test prompt: {reply}", f"Check that the server is up and serves model {self.model_id}.")
                finish = reply.finish_reason or "stop"
                results[i][k] = Generation(
                    text=reply.text, finish_reason="length" if finish == "length" else "stop",
                    prompt_tokens=reply.usage.input_tokens, completion_tokens=reply.usage.output_tokens,
                )
        return [[g for g in row if g is not None] for row in results]
