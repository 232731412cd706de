"""OpenAI and every OpenAI-compatible server (vLLM, SGLang, Ollama, llama.cpp, TGI, OpenRouter, Together, Gemini) via `openai`."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlparse

from llamaduo.errors import MissingExtra
from llamaduo.service.config import ServiceModel
from llamaduo.service.errors import ProviderFailure
from llamaduo.service.providers.base import BatchState, ProviderCall, ProviderReply, finish_reason
from llamaduo.service.providers.stainless import translate
from llamaduo.service.types import Usage

BATCH_ENDPOINT = "/v1/chat/completions"


class OpenAIProvider:
    name = "openai"
    supports_batch = True

    def __init__(self, model: ServiceModel, api_key: str):
        try:
            import openai
        except ImportError:
            raise MissingExtra("openai", "all") from None
        self._sdk, self._httpx = openai, http_module()
        self.model = model
        self.supports_n = True if model.supports_n is None else model.supports_n
        # Only api.openai.com rejects `max_tokens` for o-series/gpt-5; many compatible servers only know `max_tokens`.
        self._official = model.base_url is None or (urlparse(model.base_url).hostname or "").endswith("api.openai.com")
        self.client = openai.AsyncOpenAI(
            api_key=api_key, base_url=model.base_url, max_retries=0, timeout=model.limits.timeout_s, http_client=fast_http_client(openai)
        )

    def body(self, call: ProviderCall) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model.model, "messages": call.messages}
        body["max_completion_tokens" if self._official else "max_tokens"] = call.max_tokens
        for name in ("temperature", "top_p", "seed"):
            value = getattr(call, name)
            if value is not None:
                body[name] = value
        if call.n > 1:
            body["n"] = call.n
        if call.schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                # strict=False: strict mode rejects ordinary pydantic schemas (optional fields, defaults).
                "json_schema": {"name": call.schema.name, "schema": call.schema.json_schema, "strict": False},
            }
        return body

    async def complete(self, call: ProviderCall) -> ProviderReply:
        # The SDK's generic `post` skips its per-call TypedDict transform and model building, which cost more
        # CPU than the whole rest of a request; the body is already plain JSON and errors are still the SDK's.
        try:
            response = await self.client.post("/chat/completions", body=self.body(call), cast_to=self._httpx.Response)
            completion = json.loads(await response.aread())
        except Exception as exc:  # noqa: BLE001 - translated, or re-raised when unknown
            raise translate(exc, self._sdk) from None
        return reply_from_json(completion)

    # ---- OpenAI Batch: upload JSONL, create, poll, download ------------------------------------

    async def submit_batch(self, items: list[tuple[str, ProviderCall]], job_key: str) -> str:
        lines = [json.dumps({"custom_id": cid, "method": "POST", "url": BATCH_ENDPOINT, "body": self.body(call)}) for cid, call in items]
        data = ("\n".join(lines) + "\n").encode("utf-8")
        try:
            uploaded = await self.client.files.create(file=(f"llamaduo-{job_key[:12]}.jsonl", data), purpose="batch")
            batch = await self.client.batches.create(
                input_file_id=uploaded.id, endpoint=BATCH_ENDPOINT, completion_window="24h", metadata={"llamaduo_job": job_key[:64]}
            )
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, self._sdk) from None
        return batch.id

    async def find_batch(self, job_key: str, *, since: float, count: int) -> str | None:
        """Batches carry our job key in their metadata, so a job whose id was never saved can be found again."""
        try:
            async for batch in self.client.batches.list(limit=100):
                if (batch.metadata or {}).get("llamaduo_job") == job_key[:64] and batch.status not in ("failed", "expired", "cancelled"):
                    return batch.id
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, self._sdk) from None
        return None

    async def poll_batch(self, job_id: str) -> BatchState:
        try:
            batch = await self.client.batches.retrieve(job_id)
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, self._sdk) from None
        files = (batch.output_file_id, batch.error_file_id)
        if batch.status == "completed" or (batch.status in ("expired", "cancelled") and any(files)):
            return BatchState("done", batch.status, files)
        if batch.status in ("failed", "expired", "cancelled"):
            errors = getattr(batch, "errors", None)
            detail = "; ".join(e.message or "" for e in (errors.data or [])) if errors and errors.data else batch.status
            return BatchState("failed", detail)
        return BatchState("pending", batch.status)

    async def fetch_batch(self, state: BatchState, job_id: str) -> dict[str, ProviderReply | Exception]:
        results: dict[str, ProviderReply | Exception] = {}
        for file_id in state.result_ref or ():
            if not file_id:
                continue
            try:
                content = await self.client.files.content(file_id)
            except Exception as exc:  # noqa: BLE001
                raise translate(exc, self._sdk) from None
            for line in content.text.splitlines():
                if line.strip():
                    row = json.loads(line)
                    results[row["custom_id"]] = _batch_line_result(row, self._sdk)
        return results

    async def aclose(self) -> None:
        await self.client.close()


def fast_http_client(sdk: Any) -> Any:
    """The SDK's own aiohttp transport when aiohttp is installed: several times less CPU per request than httpx's pool."""
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return None
    factory = getattr(sdk, "DefaultAioHttpClient", None)
    try:
        return factory() if factory is not None else None
    except RuntimeError:  # older SDKs need their own `aiohttp` extra for this
        return None


def http_module() -> Any:
    """httpx2 for the current SDKs, httpx for older ones."""
    try:
        import httpx2

        return httpx2
    except ImportError:
        import httpx

        return httpx


def reply_from_json(completion: dict[str, Any]) -> ProviderReply:
    choices = completion.get("choices") if isinstance(completion, dict) else None
    if not choices:
        raise ProviderFailure("server", "the server sent a reply without choices")
    usage = completion.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    choices = sorted(choices, key=lambda c: c.get("index") or 0)
    return ProviderReply(
        texts=[(c.get("message") or {}).get("content") or "" for c in choices],
        usage=Usage(
            input_tokens=usage.get("prompt_tokens") or 0,
            cached_input_tokens=details.get("cached_tokens") or 0,
            output_tokens=usage.get("completion_tokens") or 0,
        ),
        finish_reasons=[finish_reason(c.get("finish_reason")) for c in choices],
    )


def _batch_line_result(row: dict[str, Any], sdk: Any) -> ProviderReply | Exception:
    from llamaduo.service.retry import kind_of_status

    response = row.get("response") or {}
    status = response.get("status_code", 0)
    if row.get("error") or status != 200:
        error = row.get("error") or (response.get("body") or {}).get("error") or {}
        message = (error.get("message") if isinstance(error, dict) else str(error)) or f"HTTP {status}"
        return ProviderFailure(kind_of_status(status) if status else "server", str(message)[:200], status=status or None)
    return reply_from_json(response["body"])
