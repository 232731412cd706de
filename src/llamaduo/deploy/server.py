"""`llamaduo serve`'s FastAPI app: OpenAI-compatible chat/completions over one local engine, with limits and metrics.

Every failure becomes an OpenAI-shaped error response; nothing a client sends can stop the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llamaduo.deploy import protocol as p
from llamaduo.deploy.config import ServeConfig
from llamaduo.infer.engines.base import Engine, EngineError, GenParams
from llamaduo.deploy.generation import generate_text, stream_pieces
from llamaduo.deploy.keys import check_bearer
from llamaduo.deploy.metrics import ServeMetrics
from llamaduo.deploy.tool_turn import CallArgs, CallStart, Content, ToolPlan, ToolTurn, collect_turn

log = logging.getLogger("llamaduo.serve")


class Slots:
    """The concurrency queue: `concurrency` generations run, up to `queue_size` wait, the rest get 429."""

    def __init__(self, concurrency: int, queue_size: int):
        self._sem = asyncio.Semaphore(concurrency)
        self.queue_size = queue_size
        self.waiting = 0

    def check_capacity(self) -> None:
        if self._sem.locked() and self.waiting >= self.queue_size:
            raise p.ApiError(429, "the server is at capacity; retry shortly", type="rate_limit_error", code="queue_full")

    async def acquire(self, deadline: float) -> None:
        self.check_capacity()
        self.waiting += 1
        try:
            await asyncio.wait_for(self._sem.acquire(), timeout=max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise p.ApiError(503, "timed out waiting for a free generation slot", type="server_error", code="timeout") from None
        finally:
            self.waiting -= 1

    def release(self) -> None:
        self._sem.release()


def create_app(engine: Engine, settings: ServeConfig, keys: dict[str, str] | None = None) -> FastAPI:
    """The app for one loaded engine. `keys` ({token: name}) turns bearer auth on."""
    app = FastAPI(title="llamaduo serve", docs_url=None, redoc_url=None, openapi_url=None)
    keys = keys or {}
    slots = Slots(settings.concurrency, settings.queue_size)
    metrics = ServeMetrics()
    model_name = settings.model_name or engine.model_id
    tool_cache: dict = {}
    app.state.engine, app.state.slots, app.state.metrics = engine, slots, metrics
    if hasattr(engine, "add_listener"):  # a worker-process engine reports crashes and restarts
        engine.add_listener(metrics.engine_event)

    @app.exception_handler(p.ApiError)
    async def _api_error(request: Request, exc: p.ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(p.ApiError(exc.status_code, str(exc.detail), type=kind).body(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return JSONResponse(p.ApiError(400, str(exc.errors()[0].get("msg", "invalid request"))).body(), status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error serving %s", request.url.path)
        return JSONResponse(p.ApiError(500, f"internal error: {type(exc).__name__}", type="server_error").body(), status_code=500)

    @app.middleware("http")
    async def _count(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        metrics.observe(request.url.path, response.status_code, time.perf_counter() - start)
        return response

    async def guarded(request: Request, model_cls):
        if keys and check_bearer(request.headers.get("authorization"), keys) is None:
            raise p.ApiError(401, "missing or invalid API key: send Authorization: Bearer <key>", code="invalid_api_key")
        if not engine.ready:  # 503 before any tokenizing or streaming, so a gateway in local mode falls back
            raise engine_unavailable()
        body = await read_limited(request, settings.max_body_bytes)
        return p.parse_body(body, model_cls)

    def engine_unavailable() -> p.ApiError:
        if engine.closed:
            return p.ApiError(503, "the engine has been stopped", type="server_error", code="engine_stopped")
        return p.ApiError(503, "the engine is restarting after a crash; retry shortly", type="server_error", code="engine_restarting")

    @app.get("/health")
    async def health():
        body = {"status": "ok" if engine.ready else "unavailable", "model": model_name, **engine.describe()}
        return JSONResponse(body, status_code=200 if engine.ready else 503)

    @app.get("/metrics")
    async def prometheus():
        body, content_type = metrics.render(slots.waiting)
        return Response(body, media_type=content_type)

    @app.get("/v1/models")
    async def models(request: Request):
        if keys and check_bearer(request.headers.get("authorization"), keys) is None:
            raise p.ApiError(401, "missing or invalid API key: send Authorization: Bearer <key>", code="invalid_api_key")
        card = {"id": model_name, "object": "model", "created": 0, "owned_by": "llamaduo", "context_length": engine.context_length}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        req: p.ChatRequest = await guarded(request, p.ChatRequest)
        tools, mode, forced = req.tool_setup()
        schema = req.json_schema()
        if schema is not None and not engine.supports_json_schema:
            raise p.ApiError(400, f"response_format JSON output is not supported by the {engine.name} engine; serve with --engine llamacpp or transformers", param="response_format")
        if mode != "none" and not engine.supports_json_schema:
            raise p.ApiError(400, f"tool calls need constrained decoding, which the {engine.name} engine lacks; serve with --engine llamacpp or transformers", param="tools")
        messages = [m.plain() for m in req.messages]
        try:
            # Tools render even under tool_choice none, as OpenAI shows them to the model; the call format is the one
            # training used (engines/tools.py).
            prompt_text = await asyncio.to_thread(engine.render_chat, messages, tools) if tools else await asyncio.to_thread(engine.render_chat, messages)
            prompt_ids = await asyncio.to_thread(engine.tokenize, prompt_text)
            plan = await ToolPlan.build(engine, tools, mode, forced, req.parallel_tool_calls is not False, tool_cache) if tools else None
        except EngineError as exc:
            raise api_error(exc, param="messages") from None
        limit = req.max_completion_tokens or req.max_tokens
        if plan is not None and mode == "none":
            # tool_choice none: a model trained to call may still open a call; its answer ends there, as plain text.
            stops = req.stops + ([plan.trigger] if plan.trigger else [])
            return await respond(request, req, prompt_ids, limit, schema, chat=True, stops=stops)
        return await respond(request, req, prompt_ids, limit, schema, chat=True, plan=plan)

    @app.post("/v1/completions")
    async def completions(request: Request):
        req: p.CompletionRequest = await guarded(request, p.CompletionRequest)
        if isinstance(req.prompt, list):
            if any(t < 0 or t >= 1 << 31 for t in req.prompt):
                raise p.ApiError(400, "prompt token ids must be non-negative integers", param="prompt")
            prompt_ids = list(req.prompt)
        else:
            try:
                prompt_ids = await asyncio.to_thread(engine.tokenize_plain, req.prompt)
            except EngineError as exc:
                raise api_error(exc, param="prompt") from None
        return await respond(request, req, prompt_ids, req.max_tokens, None, chat=False)

    async def respond(request: Request, req, prompt_ids: list[int], asked: int | None, schema, *, chat: bool,
                      plan: ToolPlan | None = None, stops: list[str] | None = None):
        max_tokens = check_lengths(len(prompt_ids), asked)
        if req.stream and req.n > 1:
            raise p.ApiError(400, "n > 1 is not supported with stream=true", param="n")
        deadline = time.monotonic() + settings.timeout_s
        rid = p.new_id("chatcmpl" if chat else "cmpl")

        def params() -> GenParams:
            return GenParams(prompt_ids, max_tokens, req.temperature, req.top_p, req.seed, schema)

        stops = req.stops if stops is None else stops

        def turn(gp: GenParams) -> ToolTurn:
            return ToolTurn(engine, plan, prompt_ids, gp, stops, deadline, schema)

        if req.stream:
            # The slot is taken inside the stream: a client that leaves before it starts must not hold one forever.
            slots.check_capacity()
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            if plan is not None:
                stream = tool_stream(rid, turn(params()), deadline, len(prompt_ids), include_usage, plan.mode == "required")
            else:
                stream = sse_stream(rid, params(), stops, deadline, len(prompt_ids), include_usage, chat)
            return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        await slots.acquire(deadline)
        try:
            choices, completion_tokens = [], 0
            for i in range(req.n):
                gp = params()
                if req.seed is not None:
                    gp.seed = req.seed + i
                if plan is not None:
                    text, finish, used = await collect_turn(turn(gp))
                else:
                    text, finish, used = await generate_text(engine, gp, stops, deadline)
                if finish == "timeout":
                    raise p.ApiError(504, f"generation exceeded the server's {settings.timeout_s:g}s timeout", type="server_error", code="timeout")
                choices.append((text, finish))
                completion_tokens += used
        except EngineError as exc:
            raise api_error(exc) from None
        finally:
            slots.release()
        metrics.tokens(len(prompt_ids), completion_tokens)
        build = p.chat_response if chat else p.completion_response
        return build(rid, model_name, choices, len(prompt_ids), completion_tokens)

    async def sse_stream(rid, params: GenParams, stops, deadline, prompt_tokens, include_usage, chat: bool):
        created = int(time.time())
        used = 0
        try:
            await slots.acquire(deadline)
        except p.ApiError as exc:
            yield p.sse(exc.body())
            yield p.sse("[DONE]")
            return
        try:
            if chat:
                yield p.sse(p.chat_chunk(rid, model_name, created, {"role": "assistant", "content": ""}, None))
            async for piece in stream_pieces(engine, params, stops, deadline):
                used = piece.completion_tokens
                if piece.finish == "timeout":
                    err = p.ApiError(504, f"generation exceeded the server's {settings.timeout_s:g}s timeout", type="server_error", code="timeout")
                    yield p.sse(err.body())
                    break
                if piece.text or piece.finish:
                    if chat:
                        delta = {"content": piece.text} if piece.text else {}
                        yield p.sse(p.chat_chunk(rid, model_name, created, delta, piece.finish))
                    else:
                        yield p.sse(p.completion_chunk(rid, model_name, created, piece.text, piece.finish))
            if include_usage:
                use = p.usage(prompt_tokens, used)
                chunk = p.chat_chunk(rid, model_name, created, None, None, use) if chat else p.completion_chunk(rid, model_name, created, None, None, use)
                yield p.sse(chunk)
            yield p.sse("[DONE]")
        except EngineError as exc:
            # Headers are already sent: report the failure in-band, as OpenAI does.
            yield p.sse(api_error(exc).body())
        finally:
            slots.release()
            metrics.tokens(prompt_tokens, used)

    async def tool_stream(rid, run: ToolTurn, deadline, prompt_tokens, include_usage, call_first: bool):
        """SSE of a tool turn in OpenAI's chunk sequence: role, content deltas, then per call its id and name, then
        argument deltas, and a last chunk with finish_reason tool_calls."""
        created = int(time.time())
        used = 0
        try:
            await slots.acquire(deadline)
        except p.ApiError as exc:
            yield p.sse(exc.body())
            yield p.sse("[DONE]")
            return
        try:
            yield p.sse(p.chat_chunk(rid, model_name, created, {"role": "assistant", "content": None if call_first else ""}, None))
            async with contextlib.aclosing(run.events()) as events:
                async for event in events:
                    if isinstance(event, Content):
                        delta = {"content": event.text}
                    elif isinstance(event, CallStart):
                        delta = p.tool_call_delta(event.index, call_id=event.id, name=event.name)
                    elif isinstance(event, CallArgs):
                        delta = p.tool_call_delta(event.index, event.text)
                    else:
                        used = event.completion_tokens
                        if event.finish == "timeout":
                            err = p.ApiError(504, f"generation exceeded the server's {settings.timeout_s:g}s timeout", type="server_error", code="timeout")
                            yield p.sse(err.body())
                            break
                        yield p.sse(p.chat_chunk(rid, model_name, created, {}, event.finish))
                        continue
                    yield p.sse(p.chat_chunk(rid, model_name, created, delta, None))
            if include_usage:
                yield p.sse(p.chat_chunk(rid, model_name, created, None, None, p.usage(prompt_tokens, used)))
            yield p.sse("[DONE]")
        except EngineError as exc:
            yield p.sse(api_error(exc).body())
        finally:
            slots.release()
            metrics.tokens(prompt_tokens, used)

    def api_error(exc: EngineError, param: str | None = None) -> p.ApiError:
        if exc.status == 400:
            return p.ApiError(400, str(exc), param=param)
        code = "engine_restarting" if exc.status == 503 else None
        return p.ApiError(exc.status, str(exc), type="server_error", code=code)

    def check_lengths(prompt_tokens: int, asked: int | None) -> int:
        ctx = engine.context_length
        if asked is not None and asked > settings.max_tokens:
            raise p.ApiError(400, f"max_tokens {asked} exceeds this server's limit of {settings.max_tokens}", param="max_tokens")
        if prompt_tokens >= ctx:
            raise p.ApiError(
                400,
                f"this model's maximum context length is {ctx} tokens, but the prompt has {prompt_tokens} tokens; shorten the messages",
                param="messages",
                code="context_length_exceeded",
            )
        return max(1, min(asked or settings.max_tokens, ctx - prompt_tokens))

    return app


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes without reading it all into memory first."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise p.ApiError(413, f"the request body is {declared} bytes; the limit is {limit}", code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise p.ApiError(413, f"the request body exceeds the limit of {limit} bytes", code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)

