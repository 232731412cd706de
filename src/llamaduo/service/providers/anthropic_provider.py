"""Anthropic's Messages API and Message Batches through the official `anthropic` SDK."""

from __future__ import annotations

import json
from typing import Any

from llamaduo.errors import MissingExtra
from llamaduo.service.config import ServiceModel
from llamaduo.service.errors import ProviderFailure
from llamaduo.service.providers.base import BatchState, ProviderCall, ProviderReply, finish_reason
from llamaduo.service.providers.openai_provider import fast_http_client
from llamaduo.service.providers.stainless import translate
from llamaduo.service.types import Usage

BATCH_CLOCK_SKEW_S = 600.0
"""How far a batch's server-side creation time may sit from our clock's record of the submission."""


class AnthropicProvider:
    name = "anthropic"
    supports_batch = True

    def __init__(self, model: ServiceModel, api_key: str):
        try:
            import anthropic
        except ImportError:
            raise MissingExtra("anthropic", "anthropic") from None
        self._sdk = anthropic
        self.model = model
        # The Messages API has no `n`: M samples are M requests (cache-distinct by sample index).
        self.supports_n = bool(model.supports_n)
        self.client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=model.base_url, max_retries=0, timeout=model.limits.timeout_s, http_client=fast_http_client(anthropic)
        )

    def params(self, call: ProviderCall) -> dict[str, Any]:
        system = "\n\n".join(m["content"] for m in call.messages if m["role"] == "system")
        turns = [{"role": m["role"], "content": m["content"]} for m in call.messages if m["role"] != "system"]
        params: dict[str, Any] = {"model": self.model.model, "max_tokens": call.max_tokens, "messages": turns}
        if system:
            params["system"] = system
        if call.temperature is not None:
            params["temperature"] = call.temperature
        if call.top_p is not None:
            params["top_p"] = call.top_p
        if call.schema is not None:
            # Forcing one tool whose input schema is ours is Anthropic's native structured output.
            params["tools"] = [{"name": call.schema.name, "description": "Return the answer in this structure.", "input_schema": call.schema.json_schema}]
            params["tool_choice"] = {"type": "tool", "name": call.schema.name}
        return params

    async def complete(self, call: ProviderCall) -> ProviderReply:
        params = self.params(call)
        # Newer SDKs dropped sampling arguments from the signature; the API still takes them in the body.
        sampling = {k: params.pop(k) for k in ("temperature", "top_p") if k in params}
        try:
            message = await self.client.messages.create(**params, extra_body=sampling or None)
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, self._sdk) from None
        return reply_from_message(message)

    async def submit_batch(self, items: list[tuple[str, ProviderCall]], job_key: str) -> str:
        requests = [{"custom_id": cid, "params": self.params(call)} for cid, call in items]
        try:
            batch = await self.client.messages.batches.create(requests=requests)
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, self._sdk) from None
        return batch.id

    async def find_batch(self, job_key: str, *, since: float, count: int) -> str | None:
        """Message batches carry no metadata, so ours is the one created nearest `since` with `count` requests.

        A wrong pick cannot mix up replies: results are matched by custom id, and a batch holding none of ours
        is reported as such (the caller then submits again).
        """
        best: tuple[float, str] | None = None
        try:
            async for batch in self.client.messages.batches.list(limit=100):
                created = batch.created_at.timestamp()
                if created < since - BATCH_CLOCK_SKEW_S:
                    break  # listed newest first: the rest are older still
                counts = batch.request_counts
                total = counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
                gap = abs(created - since)
                if total == count and gap <= BATCH_CLOCK_SKEW_S and (best is None or gap < best[0]):
                    best = (gap, batch.id)
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, self._sdk) from None
        return best[1] if best else None

    async def poll_batch(self, job_id: str) -> BatchState:
        try:
            batch = await self.client.messages.batches.retrieve(job_id)
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, self._sdk) from None
        if batch.processing_status == "ended":
            return BatchState("done", "ended")
        return BatchState("pending", batch.processing_status)

    async def fetch_batch(self, state: BatchState, job_id: str) -> dict[str, ProviderReply | Exception]:
        results: dict[str, ProviderReply | Exception] = {}
        try:
            async for item in await self.client.messages.batches.results(job_id):
                result = item.result
                if result.type == "succeeded":
                    results[item.custom_id] = reply_from_message(result.message)
                elif result.type == "errored":
                    error = getattr(getattr(result, "error", None), "error", None)
                    results[item.custom_id] = ProviderFailure("server", str(getattr(error, "message", "errored"))[:200])
                else:  # expired or canceled: worth asking again
                    results[item.custom_id] = ProviderFailure("server", f"batch item {result.type}")
        except ProviderFailure:
            raise
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, self._sdk) from None
        return results

    async def aclose(self) -> None:
        await self.client.close()


def reply_from_message(message: Any) -> ProviderReply:
    text_parts, tool_input = [], None
    for block in message.content or []:
        if block.type == "tool_use":
            tool_input = block.input
        elif block.type == "text":
            text_parts.append(block.text)
    text = json.dumps(tool_input, ensure_ascii=False) if tool_input is not None else "".join(text_parts)
    usage = message.usage
    cache_read = getattr(usage, "cache_read_input_tokens", None) or 0
    cache_write = getattr(usage, "cache_creation_input_tokens", None) or 0
    return ProviderReply(
        texts=[text],
        # Anthropic's input_tokens excludes cache reads and writes; ours counts every input token.
        usage=Usage(input_tokens=usage.input_tokens + cache_read + cache_write, cached_input_tokens=cache_read, output_tokens=usage.output_tokens),
        finish_reasons=[finish_reason(message.stop_reason)],
    )
