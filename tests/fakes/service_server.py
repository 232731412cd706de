"""A real HTTP server on 127.0.0.1 that speaks OpenAI, Anthropic and Gemini, with scripted replies and injected faults.

In tests:    with FakeServiceServer() as server: ... server.openai_base_url ... server.count("openai.chat")
As process:  python -m tests.fakes.service_server --port 0 --latency-ms 50 --fail-429 0.1
             (prints `listening on http://127.0.0.1:PORT`; GET /_fake/stats returns the counters, POST /_fake/reset clears them)

Endpoints: /v1/chat/completions (n, usage with cached_tokens, response_format, tool calls, stream), /v1/files, /v1/files/{id}/content,
/v1/batches, /v1/messages, /v1/messages/batches[/{id}[/results]], /v1beta/models/{model}:generateContent.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes import protocols as P
from tests.fakes.batches import BatchBook

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 408: "Request Timeout",
           429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 529: "Overloaded"}
CHAT_APIS = ("openai.chat", "anthropic.messages", "gemini.generate")


@dataclass
class Fault:
    """One injected misbehaviour, consumed by the next chat request (queue it with `server.enqueue`)."""

    status: int | None = None
    """Answer with this HTTP status and an error body in the provider's format."""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    """Wait this long before answering (past the client's timeout to provoke one)."""
    truncate: bool = False
    """Promise a longer body than is sent, then close the connection."""
    drop: bool = False
    """Close the connection without any reply."""

    @classmethod
    def rate_limited(cls, retry_after: str | None = "1", retry_after_ms: str | None = None) -> Fault:
        headers = {}
        if retry_after is not None:
            headers["retry-after"] = retry_after
        if retry_after_ms is not None:
            headers["retry-after-ms"] = retry_after_ms
        return cls(status=429, headers=headers)

    @classmethod
    def error(cls, status: int = 503) -> Fault:
        return cls(status=status)

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        return cls(delay_s=seconds)


@dataclass
class Received:
    """One request as the server got it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    ts: float
    """time.monotonic() on arrival."""
    api: str
    """e.g. openai.chat, openai.files, openai.batches, anthropic.messages, anthropic.batches, gemini.generate."""

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None


@dataclass
class _Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    truncate: bool = False
    drop: bool = False


Responder = Callable[[P.ChatCall], P.Reply]


class FakeServiceServer:
    """The fake provider. Everything a test tunes is a plain attribute; everything received is in `requests`."""

    def __init__(self, *, latency_ms: float = 0.0, fail_429: float = 0.0, fail_5xx: float = 0.0, retry_after: str | None = "0.05",
                 require_key: str | None = None, batch_polls: int = 1, seed: int = 0, record_bodies: bool = True, port: int = 0):
        self.latency_s = latency_ms / 1000.0
        self.fail_429, self.fail_5xx, self.retry_after = fail_429, fail_5xx, retry_after
        self.require_key = require_key
        """When set, requests must carry this key (Bearer, x-api-key or x-goog-api-key), else 401."""
        self.responder: Responder = P.default_reply
        self.honour_n = True
        """False: answer one choice whatever `n` asks (as Ollama does)."""
        self.record_bodies = record_bodies
        self.gzip_replies = False
        """True: compress reply bodies for clients that accept gzip (as api.openai.com does)."""
        self.requests: list[Received] = []
        self.counts: Counter[str] = Counter()
        self.batches = BatchBook(self, batch_polls)
        self.in_flight = 0
        self.max_in_flight = 0
        """Most chat requests being answered at once (to check a client's concurrency limit)."""
        self._queue: list[str | P.ToolCalls | Fault] = []
        self._seen_prefixes: set[str] = set()
        self._rng = random.Random(seed)
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    # ---- test API ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    @property
    def gemini_base_url(self) -> str:
        return self.url

    def enqueue(self, *items: str | P.ToolCalls | Fault) -> None:
        """Script the next chat requests: a str is the reply text, ToolCalls an OpenAI reply that calls functions, a
        Fault misbehaves once."""
        self._queue.extend(items)

    def count(self, api: str | None = None) -> int:
        return sum(self.counts.values()) if api is None else self.counts[api]

    def received(self, api: str | None = None) -> list[Received]:
        return [r for r in list(self.requests) if api is None or r.api == api]

    def reset(self) -> None:
        self.max_in_flight = 0
        self.requests.clear()
        self.counts.clear()
        self._queue.clear()
        self._seen_prefixes.clear()

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FakeServiceServer:
        """Serve from a background thread (for pytest fixtures)."""
        started = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self._bind())
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._close())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-service-server", daemon=True)
        self._thread.start()
        started.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None

    def __enter__(self) -> FakeServiceServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _bind(self) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", self._port, backlog=1024)
        self._port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in asyncio.all_tasks(self._loop):
                if task is not asyncio.current_task():
                    task.cancel()

    # ---- HTTP/1.1 --------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                if "content-length" in headers:
                    body = await reader.readexactly(int(headers["content-length"]))
                elif headers.get("transfer-encoding", "").lower() == "chunked":
                    body = await _read_chunked(reader)
                else:
                    body = b""
                reply = await self._dispatch(method, target.split("?", 1)[0], headers, body)
                if reply.drop:
                    return
                if self.gzip_replies and "gzip" in headers.get("accept-encoding", "") and not reply.truncate:
                    reply.body, reply.headers = gzip.compress(reply.body), {**reply.headers, "content-encoding": "gzip"}
                head_out = f"HTTP/1.1 {reply.status} {REASONS.get(reply.status, 'Status')}\r\ncontent-type: {reply.content_type}\r\n"
                length = len(reply.body) * 2 + 10 if reply.truncate else len(reply.body)
                extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
                writer.write(f"{head_out}content-length: {length}\r\n{extra}\r\n".encode("latin-1"))
                writer.write(reply.body)
                await writer.drain()
                if reply.truncate or headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def _dispatch(self, method: str, path: str, headers: dict[str, str], body: bytes) -> _Reply:
        api = _api_of(method, path)
        if api == "admin":
            return self._admin(method, path)
        self.counts[api] += 1
        self.requests.append(Received(method, path, headers, body if self.record_bodies else b"", time.monotonic(), api))
        provider = api.split(".")[0]
        if self.require_key is not None and _presented_key(headers) != self.require_key:
            return _error(provider, 401, "Incorrect API key provided: " + (_presented_key(headers) or "none")[:6] + "...")
        try:
            payload = json.loads(body) if body and headers.get("content-type", "").startswith("application/json") else None
        except json.JSONDecodeError:
            return _error(provider, 400, "body is not JSON")
        if api in CHAT_APIS:
            return await self._chat(api, path, payload or {}, headers)
        return await self.batches.handle(api, method, path, payload, headers, body)

    def _admin(self, method: str, path: str) -> _Reply:
        if method == "POST" and path == "/_fake/reset":
            self.reset()
        stats = {"total": self.count(), "counts": dict(self.counts)}
        return _Reply(body=json.dumps(stats).encode())

    # ---- chat ----------------------------------------------------------------------------------

    async def _chat(self, api: str, path: str, payload: dict[str, Any], headers: dict[str, str]) -> _Reply:
        provider = api.split(".")[0]
        fault = self._next_fault()
        delay = self.latency_s + (fault.delay_s if fault else 0.0)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if delay:
                await asyncio.sleep(delay)
        finally:
            self.in_flight -= 1
        if fault is not None and (fault.status or fault.drop):
            if fault.drop:
                return _Reply(drop=True)
            return _error(provider, fault.status or 500, "injected fault", fault.headers)
        call = self.parse_call(api, path, payload, headers)
        if api == "openai.chat" and payload.get("stream"):
            stream = P.openai_stream(call, self._replies(call), self._cached_tokens(call))
            return _Reply(body=stream, content_type="text/event-stream", truncate=bool(fault and fault.truncate))
        body = self.answer(call)
        return _Reply(body=json.dumps(body).encode(), truncate=bool(fault and fault.truncate))

    def parse_call(self, api: str, path: str, payload: dict[str, Any], headers: dict[str, str]) -> P.ChatCall:
        if api == "openai.chat":
            return P.openai_call(payload, headers)
        if api == "anthropic.messages":
            return P.anthropic_call(payload, headers)
        return P.gemini_call(path.rsplit("/", 1)[-1].split(":")[0], payload, headers)

    def answer(self, call: P.ChatCall) -> dict[str, Any]:
        """The provider-format reply body for a parsed call (also used to fill batch results)."""
        texts = self._replies(call)
        cached = self._cached_tokens(call)
        if call.api == "openai":
            return P.openai_completion(call, texts, cached)
        if call.api == "anthropic":
            return P.anthropic_message(call, texts[0], cached)
        return P.gemini_response(call, texts, cached)

    def _replies(self, call: P.ChatCall) -> list[P.Reply]:
        texts: list[P.Reply] = []
        for i in range(call.n if self.honour_n else 1):
            call.index = i
            head = self._queue[0] if self._queue else None
            texts.append(self._queue.pop(0) if isinstance(head, (str, P.ToolCalls)) else self.responder(call))  # type: ignore[arg-type]
        return texts

    def _cached_tokens(self, call: P.ChatCall) -> int:
        """Like provider prompt caches: a prompt whose earlier turns were seen before gets them billed as cached."""
        prefix = json.dumps(call.messages[:-1])
        if len(call.messages) < 2:
            return 0
        if prefix in self._seen_prefixes:
            return P.tokens(prefix)
        self._seen_prefixes.add(prefix)
        return 0

    def _next_fault(self) -> Fault | None:
        if self._queue and isinstance(self._queue[0], Fault):
            return self._queue.pop(0)  # type: ignore[return-value]
        roll = self._rng.random()
        if roll < self.fail_429:
            headers = {"retry-after": self.retry_after} if self.retry_after is not None else {}
            return Fault(status=429, headers=headers)
        if roll < self.fail_429 + self.fail_5xx:
            return Fault(status=503)
        return None


def _api_of(method: str, path: str) -> str:
    if path.startswith("/_fake/"):
        return "admin"
    if path.endswith("/chat/completions"):
        return "openai.chat"
    if path.startswith("/v1/files"):
        return "openai.files"
    if path.startswith("/v1/batches"):
        return "openai.batches"
    if path.startswith("/v1/messages/batches"):
        return "anthropic.batches"
    if path.startswith("/v1/messages"):
        return "anthropic.messages"
    if path.endswith(":generateContent"):
        return "gemini.generate"
    return "unknown"


def _presented_key(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return headers.get("x-api-key") or headers.get("x-goog-api-key")


def _error(provider: str, status: int, message: str, headers: dict[str, str] | None = None) -> _Reply:
    if provider == "anthropic":
        body = P.anthropic_error(status, message)
    elif provider == "gemini":
        body = P.gemini_error(status, message)
    else:
        body = P.openai_error(status, message)
    return _Reply(status=status, body=json.dumps(body).encode(), headers=dict(headers or {}))


def json_reply(obj: Any, status: int = 200) -> _Reply:
    return _Reply(status=status, body=json.dumps(obj).encode())


def bytes_reply(data: bytes, content_type: str = "application/octet-stream") -> _Reply:
    return _Reply(body=data, content_type=content_type)


def not_found(provider: str, what: str) -> _Reply:
    return _error(provider, 404, f"{what} not found")


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while True:
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            await reader.readline()
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readline()


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:20]}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--fail-429", type=float, default=0.0, help="fraction of chat requests answered 429")
    parser.add_argument("--fail-5xx", type=float, default=0.0, help="fraction of chat requests answered 503")
    parser.add_argument("--retry-after", default="0.05", help="Retry-After header value sent with 429s")
    parser.add_argument("--batch-polls", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--responder", default=None, help="module:callable that answers chat calls (default: schema instances)")
    args = parser.parse_args(argv)
    server = FakeServiceServer(latency_ms=args.latency_ms, fail_429=args.fail_429, fail_5xx=args.fail_5xx, retry_after=args.retry_after,
                               batch_polls=args.batch_polls, seed=args.seed, record_bodies=False, port=args.port)
    if args.responder:
        import importlib

        module, _, name = args.responder.partition(":")
        server.responder = getattr(importlib.import_module(module), name)()

    async def serve() -> None:
        await server._bind()
        print(f"listening on {server.url}", flush=True)
        assert server._server is not None  # noqa: S101
        async with server._server:
            await server._server.serve_forever()

    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
