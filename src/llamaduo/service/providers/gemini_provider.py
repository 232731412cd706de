"""Google Gemini through `google-genai` (generateContent; `candidate_count` gives several samples per request)."""

from __future__ import annotations

from typing import Any

from llamaduo.errors import MissingExtra
from llamaduo.service.config import ServiceModel
from llamaduo.service.errors import ProviderFailure
from llamaduo.service.providers.base import BatchState, ProviderCall, ProviderReply, finish_reason
from llamaduo.service.providers.stainless import transport_failure
from llamaduo.service.retry import kind_of_status, parse_retry_after
from llamaduo.service.types import Usage


class GeminiProvider:
    name = "gemini"
    supports_batch = False

    def __init__(self, model: ServiceModel, api_key: str):
        try:
            from google import genai
            from google.genai import errors, types
        except ImportError:
            raise MissingExtra("google-genai", "gemini") from None
        self._types, self._errors = types, errors
        self.model = model
        self.supports_n = True if model.supports_n is None else model.supports_n
        options = types.HttpOptions(
            base_url=model.base_url,
            timeout=int(model.limits.timeout_s * 1000),
            # attempts=1: the SDK must not retry behind our back; our policy counts and paces retries.
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        self.client = genai.Client(api_key=api_key, http_options=options)

    def request(self, call: ProviderCall) -> dict[str, Any]:
        system = "\n\n".join(m["content"] for m in call.messages if m["role"] == "system")
        contents = [
            {"role": "model" if m["role"] == "assistant" else "user", "parts": [{"text": m["content"]}]}
            for m in call.messages
            if m["role"] != "system"
        ]
        config: dict[str, Any] = {"max_output_tokens": call.max_tokens}
        if system:
            config["system_instruction"] = system
        for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p"), ("seed", "seed")):
            value = getattr(call, ours)
            if value is not None:
                config[theirs] = value
        if call.n > 1:
            config["candidate_count"] = call.n
        if call.schema is not None:
            config["response_mime_type"] = "application/json"
            config["response_json_schema"] = call.schema.json_schema
        return {"model": self.model.model, "contents": contents, "config": self._types.GenerateContentConfig(**config)}

    async def complete(self, call: ProviderCall) -> ProviderReply:
        try:
            response = await self.client.aio.models.generate_content(**self.request(call))
        except self._errors.APIError as exc:
            headers = dict(getattr(exc.response, "headers", None) or {})
            raise ProviderFailure(kind_of_status(exc.code), str(exc.message or exc.status or exc.code)[:200], status=exc.code, retry_after=parse_retry_after(headers)) from None
        except ValueError:  # a body that is not JSON (truncated or garbled)
            raise ProviderFailure("server", "the server sent a reply that is not valid JSON") from None
        except Exception as exc:  # noqa: BLE001 - transport errors (httpx or aiohttp, whichever the SDK picked)
            raise transport_failure(exc) from None
        return _reply(response)

    async def submit_batch(self, items: list[tuple[str, ProviderCall]], job_key: str) -> str:
        raise ProviderFailure("client", "batch mode is not available for gemini; use mode: online")

    async def find_batch(self, job_key: str, *, since: float, count: int) -> str | None:
        return None

    async def poll_batch(self, job_id: str) -> BatchState:
        raise ProviderFailure("client", "batch mode is not available for gemini")

    async def fetch_batch(self, state: BatchState, job_id: str) -> dict[str, ProviderReply | Exception]:
        raise ProviderFailure("client", "batch mode is not available for gemini")

    async def aclose(self) -> None:
        await self.client.aio.aclose()


def _reply(response: Any) -> ProviderReply:
    candidates = sorted(response.candidates or [], key=lambda c: c.index or 0)
    if not candidates:
        raise ProviderFailure("server", "the reply has no candidates")
    texts = ["".join(p.text or "" for p in (c.content.parts if c.content and c.content.parts else [])) for c in candidates]
    meta = response.usage_metadata
    return ProviderReply(
        texts=texts,
        usage=Usage(
            input_tokens=(meta.prompt_token_count or 0) if meta else 0,
            cached_input_tokens=(meta.cached_content_token_count or 0) if meta else 0,
            output_tokens=((meta.candidates_token_count or 0) + (getattr(meta, "thoughts_token_count", 0) or 0)) if meta else 0,
        ),
        finish_reasons=[finish_reason(getattr(c.finish_reason, "value", c.finish_reason)) for c in candidates],
    )
