"""OpenAI-compatible backend (vLLM, SGLang, Ollama, TGI, llama-server, `llamaduo serve`) through the service layer.

Each endpoint gets its own service client with `infer.concurrency` requests in flight; prompts are dealt out
round-robin, which is data parallelism over several servers. The response cache is off: a retrained model may be
served under the same name, and a cached answer would then be stale.
"""

from __future__ import annotations

import asyncio
from typing import Any

from llamaduo.errors import LlamaduoError
from llamaduo.infer.backends import Generation


class OpenAICompatBackend:
    name = "openai"

    def __init__(self, config: Any, model: str):
        from llamaduo.service.config import Limits, ServiceModel

        infer = config.infer
        if not infer.endpoints:
            raise LlamaduoError("the openai backend needs at least one endpoint", "Set infer.endpoints, e.g. --set 'infer.endpoints=[http://localhost:8000/v1]'.")
        self.infer = infer
        self.model = model
        self.fingerprint = f"{model}@" + ",".join(infer.endpoints)
        self.configs = []
        for url in infer.endpoints:
            cfg = config.model_copy(deep=True)
            cfg._base_dir = config.base_dir
            cfg.service.cache = False
            cfg.service.generator = ServiceModel(
                provider="openai", model=model, base_url=url, api_key_env=infer.api_key_env, supports_n=False,
                limits=Limits(concurrency=infer.concurrency),
            )
            self.configs.append(cfg)

    def render(self, messages: list[dict[str, str]]) -> str:
        return ""  # the server applies its chat template; the messages are recorded instead

    def generate(self, prompts: list[list[dict[str, str]]], samples: int) -> list[list[Generation]]:
        from llamaduo.service import run_sync

        return run_sync(self._generate(prompts, samples))

    async def _generate(self, prompts: list[list[dict[str, str]]], samples: int) -> list[list[Generation]]:
        from llamaduo.service import ChatRequest, ServiceError, open_service

        params: dict[str, Any] = {"max_tokens": self.infer.max_new_tokens, "seed": self.infer.seed}
        params.update({"temperature": 0.0} if samples == 1 else {"temperature": self.infer.temperature, "top_p": self.infer.top_p})
        jobs = [(i, k) for i in range(len(prompts)) for k in range(samples)]
        shares: list[list[tuple[int, int]]] = [jobs[j :: len(self.configs)] for j in range(len(self.configs))]

        async def endpoint(cfg: Any, share: list[tuple[int, int]]) -> list[Any]:
            async with open_service(cfg, "generator") as client:
                requests = [ChatRequest(prompts[i], params=params, sample=k) for i, k in share]
                return await client.chat_many(requests, stage="infer")

        replies = await asyncio.gather(*(endpoint(c, s) for c, s in zip(self.configs, shares, strict=True)))
        results: list[list[Generation | None]] = [[None] * samples for _ in prompts]
        for share, answers in zip(shares, replies, strict=True):
            for (i, k), reply in zip(share, answers, strict=True):
                if isinstance(reply, ServiceError):
                    raise LlamaduoError(f"the endpoint failed on a test prompt: {reply}", "Check that the server is up and serves model " + self.model + ".")
                finish = reply.finish_reason or "stop"
                results[i][k] = Generation(
                    text=reply.text.strip(), finish_reason="length" if finish == "length" else "stop",
                    prompt_tokens=reply.usage.input_tokens, completion_tokens=reply.usage.output_tokens,
                )
        return [[g for g in row if g is not None] for row in results]

    def close(self) -> None:
        return None
