"""Bridges a blocking engine to asyncio: one worker thread per generation feeds tokens to the event loop.

Stop strings, the deadline and client disconnects all end the generation through the same cancel flag.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from llamaduo.deploy.engines.base import Engine, GenParams, StopMatcher

_END = object()


@dataclass
class Piece:
    """New text for the client; `finish` is set on the last piece (stop, length or timeout)."""

    text: str
    completion_tokens: int
    finish: str | None = None


async def stream_pieces(engine: Engine, params: GenParams, stops: list[str], deadline: float) -> AsyncIterator[Piece]:
    """Yield text as it is generated. Raises EngineError from the engine; never leaves a thread running."""
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue = asyncio.Queue()

    def pump() -> None:
        try:
            for step in engine.generate(params):
                loop.call_soon_threadsafe(inbox.put_nowait, step)
                if params.cancel.is_set():
                    break
        except BaseException as exc:  # re-raised in the event loop below
            loop.call_soon_threadsafe(inbox.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(inbox.put_nowait, _END)

    worker = threading.Thread(target=pump, daemon=True, name="llamaduo-pump")
    worker.start()
    matcher = StopMatcher(stops)
    produced = 0
    finish = "length"
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                finish = "timeout"
                break
            try:
                item = await asyncio.wait_for(inbox.get(), timeout=remaining)
            except asyncio.TimeoutError:
                finish = "timeout"
                break
            if item is _END:
                finish = "length" if produced >= params.max_tokens else "stop"
                break
            if isinstance(item, BaseException):
                raise item
            produced += 1
            text = matcher.feed(item.text)
            if matcher.stopped:
                finish = "stop"
                if text:
                    yield Piece(text, produced)
                break
            if text:
                yield Piece(text, produced)
        tail = matcher.flush()
        yield Piece(tail, produced, finish)
    finally:
        params.cancel.set()
        # The worker notices the cancel flag at its next token; wait for it off the event loop.
        await asyncio.to_thread(worker.join)


async def generate_text(engine: Engine, params: GenParams, stops: list[str], deadline: float) -> tuple[str, str, int]:
    """The whole answer: (text, finish_reason, completion_tokens)."""
    parts: list[str] = []
    finish, tokens = "stop", 0
    async for piece in stream_pieces(engine, params, stops, deadline):
        parts.append(piece.text)
        tokens = piece.completion_tokens
        if piece.finish:
            finish = piece.finish
    return "".join(parts), finish, tokens
