"""`llamaduo gateway`: an OpenAI-compatible endpoint in front of the application.

capture: forward to the service LLM and log each pair; shadow: also ask the local model and log both;
local: answer locally and fall back to the service on error, timeout or an engine that is down.
Bodies (and SSE streams) pass through byte for byte; only the capture store sees a parsed, optionally redacted copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import Counter

from llamaduo.deploy import protocol as p
from llamaduo.deploy.capture import CaptureStore
from llamaduo.deploy.config import GatewayConfig, UpstreamConfig
from llamaduo.deploy.keys import check_bearer
from llamaduo.deploy.metrics import ServeMetrics
from llamaduo.deploy.canary import CONVERSATION_HEADER
from llamaduo.deploy.migration import Migration
from llamaduo.deploy.redact import redact
from llamaduo.deploy.server import read_limited
from llamaduo.deploy.sse import assemble_stream

_PASS_HEADERS = ("content-type", "x-request-id", "openai-processing-ms")


class Upstream:
    """One OpenAI-compatible endpoint. The client's own Authorization header is never forwarded."""

    def __init__(self, name: str, cfg: UpstreamConfig, key: str | None):
        self.name, self.cfg = name, cfg
        self.base = cfg.base_url.rstrip("/")
        self._headers = {"content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {})}
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(cfg.timeout_s, connect=min(5.0, cfg.timeout_s)), limits=limits)

    def body(self, payload: dict[str, Any], **changes: Any) -> bytes:
        """The request as sent upstream; a change of None drops that key."""
        payload = {k: v for k, v in {**payload, **changes}.items() if v is not None or k not in changes}
        if self.cfg.model:
            payload["model"] = self.cfg.model
        return json.dumps(payload).encode()

    async def open(self, path: str, content: bytes | None = None, method: str = "POST", *, stream: bool = False,
                   content_type: str | None = None) -> httpx.Response:
        """The upstream response; with `stream` only its headers are read, so SSE can pass through as it arrives."""
        headers = {**self._headers, "content-type": content_type} if content_type else self._headers
        request = self.http.build_request(method, f"{self.base}{path}", content=content, headers=headers)
        return await self.http.send(request, stream=stream)

    def model_of(self, payload: dict[str, Any]) -> str:
        return self.cfg.model or str(payload.get("model") or "")


def create_gateway_app(settings: GatewayConfig, store: CaptureStore, service: Upstream, local: Upstream | None,
                       client_keys: dict[str, str] | None = None, migration: Migration | None = None) -> FastAPI:
    """`migration` carries the mode (which the policy may change), canary routing and live judging; none: a fixed mode."""
    background: set[asyncio.Task] = set()
    migration = migration or Migration(settings)
    router = migration.router

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.to_thread(migration.start)
        yield
        await asyncio.to_thread(migration.stop)
        if background:  # let shadow requests finish writing before the store closes
            await asyncio.gather(*background, return_exceptions=True)
        await service.http.aclose()
        if local is not None:
            await local.http.aclose()

    app = FastAPI(title="llamaduo gateway", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    client_keys = client_keys or {}
    metrics = ServeMetrics("llamaduo_gateway")
    answered = Counter("llamaduo_gateway_answers", "Answers by upstream", ["answered_by"], registry=metrics.registry)
    fallbacks = Counter("llamaduo_gateway_fallbacks", "Local failures answered by the service", registry=metrics.registry)
    metrics.registry.register(migration.collector())  # live scores, rates, latency and judge spend of the window
    app.state.store, app.state.background, app.state.migration = store, background, migration

    def scrub(value: Any) -> Any:
        return redact(value) if settings.redact_pii else value

    @app.exception_handler(p.ApiError)
    async def _api_error(request: Request, exc: p.ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.middleware("http")
    async def _count(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        metrics.observe(request.url.path, response.status_code, time.perf_counter() - start)
        return response

    def client_of(request: Request) -> str:
        if not client_keys:
            return "anonymous"
        name = check_bearer(request.headers.get("authorization"), client_keys)
        if name is None:
            raise p.ApiError(401, "missing or invalid API key: send Authorization: Bearer <your gateway key>", code="invalid_api_key")
        return name

    @app.get("/health")
    async def health():
        return {"status": "ok", "mode": router.mode}

    @app.get("/metrics")
    async def prometheus():
        body, content_type = metrics.render(0)
        return Response(body, media_type=content_type)

    @app.get("/v1/models")
    async def models(request: Request):
        client_of(request)
        target = local if router.mode == "local" and local is not None else service
        try:
            resp = await target.open("/models", method="GET")
            body = await resp.aread()
        except httpx.HTTPError:
            if target is service:
                raise p.ApiError(502, "the service LLM is unreachable", type="server_error") from None
            resp = await service.open("/models", method="GET")
            body = await resp.aread()
        return Response(body, status_code=resp.status_code, media_type="application/json")

    @app.post("/v1/feedback")
    async def feedback(request: Request):
        client_of(request)
        data = _json_or_none(await read_limited(request, 65536))
        if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not isinstance(data.get("satisfactory"), bool):
            raise p.ApiError(400, 'send {"id": "<x-llamaduo-capture-id>", "satisfactory": true|false, "note": optional}')
        note = data.get("note") if isinstance(data.get("note"), str) else None
        found = await asyncio.to_thread(store.feedback, data["id"], data["satisfactory"], scrub(note))
        if not found:
            raise p.ApiError(404, f"no captured request {data['id']}", type="not_found_error", param="id")
        return {"id": data["id"], "satisfactory": data["satisfactory"]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        client = client_of(request)
        raw = await read_limited(request, settings.max_body_bytes)
        try:
            payload = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise p.ApiError(400, f"the request body is not valid JSON: {exc}") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
            raise p.ApiError(400, "the request body must be a JSON object with a `messages` list", param="messages")
        stream = bool(payload.get("stream"))
        capture_id = uuid.uuid4().hex
        start = time.perf_counter()
        resp, target, fallback_reason = await open_answer(payload, stream, client, request.headers.get(CONVERSATION_HEADER))
        headers = {k: v for k, v in resp.headers.items() if k.lower() in _PASS_HEADERS}
        headers.update({"x-llamaduo-answered-by": target.name, "x-llamaduo-model": target.model_of(payload)})
        if fallback_reason:
            headers["x-llamaduo-fallback-reason"] = fallback_reason
        answered.labels(target.name).inc()

        if resp.status_code != 200 or not stream:
            body = await resp.aread()
            await resp.aclose()
            if resp.status_code == 200:
                headers["x-llamaduo-capture-id"] = capture_id
                response = _json_or_none(body)
                await record(capture_id, client, target, payload, response, start, fallback_reason)
            elif target is service and migration.live_store is not None:  # the service's own errors count in its live error rate
                await asyncio.to_thread(store.add, capture_id=capture_id, client=client, mode=router.mode, answered_by=service.name,
                                        model=service.model_of(payload), request={}, response=None, status=resp.status_code,
                                        latency_ms=(time.perf_counter() - start) * 1000, fallback_reason=fallback_reason)
            return Response(body, status_code=resp.status_code, headers=headers)

        headers["x-llamaduo-capture-id"] = capture_id

        async def passthrough():
            chunks: list[bytes] = []
            recorded = False
            try:
                async for chunk in resp.aiter_bytes():  # decoded: content-encoding is not passed on
                    chunks.append(chunk)
                    if not recorded and b"data: [DONE]" in b"".join(chunks[-2:]):
                        # Write the pair before the client sees the end, so feedback can follow at once.
                        recorded = True
                        await record(capture_id, client, target, payload, assemble_stream(b"".join(chunks)), start, fallback_reason)
                    yield chunk
            finally:
                await resp.aclose()
            if not recorded:
                await record(capture_id, client, target, payload, assemble_stream(b"".join(chunks)), start, fallback_reason)

        return StreamingResponse(passthrough(), status_code=200, headers=headers)

    async def open_answer(payload: dict[str, Any], stream: bool, client: str, conversation: str | None) -> tuple[httpx.Response, Upstream, str | None]:
        """Local first in local mode (and for canary's share), the service otherwise; a local failure falls back without the client noticing."""
        reason = None
        if local is not None and router.answer_locally(payload, client, conversation):
            try:
                resp = await local.open("/chat/completions", local.body(payload), stream=stream)
                if resp.status_code == 200:
                    return resp, local, None
                reason = f"local answered HTTP {resp.status_code}"
                await resp.aclose()
            except httpx.TimeoutException:
                reason = "local timed out"
            except httpx.HTTPError as exc:
                reason = f"local unreachable ({type(exc).__name__})"
            fallbacks.inc()
        return await ask_service("/chat/completions", service.body(payload), stream=stream), service, reason

    async def ask_service(path: str, content: bytes | None, **options: Any) -> httpx.Response:
        """The service's response; its timeout or absence becomes the OpenAI-shaped 504/502 the client expects."""
        try:
            return await service.open(path, content, **options)
        except httpx.TimeoutException:
            raise p.ApiError(504, "the service LLM timed out", type="server_error", code="timeout") from None
        except httpx.HTTPError as exc:
            raise p.ApiError(502, f"the service LLM is unreachable ({type(exc).__name__})", type="server_error") from None

    async def record(capture_id: str, client: str, target: Upstream, payload: dict, response: dict | None, start: float,
                     fallback_reason: str | None) -> None:
        latency = (time.perf_counter() - start) * 1000
        request = scrub({k: v for k, v in payload.items() if k not in ("stream", "stream_options")})
        await asyncio.to_thread(
            store.add, capture_id=capture_id, client=client, mode=router.mode, answered_by=target.name, model=target.model_of(payload),
            request=request, response=scrub(response), status=200, latency_ms=latency, fallback_reason=fallback_reason,
        )
        job = None
        if local is not None and router.shadows(target.name):
            job = shadow(capture_id, payload)
        elif target is local and migration.wants_reference(capture_id):  # live judging needs the service's answer too
            job = migration.fetch_reference(service, capture_id, payload, scrub)
        if job is not None:
            task = asyncio.create_task(job)
            background.add(task)
            task.add_done_callback(background.discard)

    async def shadow(capture_id: str, payload: dict) -> None:
        """Ask the local model the same question; its answer (or error) goes beside the service's in the store."""
        start = time.perf_counter()
        response, error = None, None
        try:
            resp = await local.open("/chat/completions", local.body(payload, stream=False, stream_options=None))
            body = await resp.aread()
            await resp.aclose()
            response = _json_or_none(body) if resp.status_code == 200 else None
            error = None if response is not None else f"HTTP {resp.status_code}"
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        latency = (time.perf_counter() - start) * 1000
        await asyncio.to_thread(store.set_local, capture_id, scrub(response), latency, error)
        migration.local_done(capture_id)

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def forward(rest: str, request: Request):
        """Every other endpoint (embeddings, completions, moderations, files...) goes to the service unchanged and
        uncaptured, so an application can point its whole base_url here."""
        client_of(request)
        content = await read_limited(request, settings.max_body_bytes) if request.method in ("POST", "PUT", "PATCH") else None
        path = f"/{rest}" + (f"?{request.url.query}" if request.url.query else "")
        resp = await ask_service(path, content, method=request.method, stream=True, content_type=request.headers.get("content-type"))
        headers = {k: v for k, v in resp.headers.items() if k.lower() in _PASS_HEADERS}
        headers["x-llamaduo-answered-by"] = service.name

        async def body():
            try:
                async for chunk in resp.aiter_bytes():
                    yield chunk
            finally:
                await resp.aclose()

        return StreamingResponse(body(), status_code=resp.status_code, headers=headers)

    return app


def _json_or_none(body: bytes) -> dict | None:
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None
