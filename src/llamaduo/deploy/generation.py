"""Bridges a blocking engine to asyncio: one worker thread per generation feeds tokens to the event loop.

Stop strings, the deadline and client disconnects all end the generation through the same cancel flag.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from llamaduo.infer.engines.base import Engine, GenParams, StopMatcher

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

    pending: list = []
    guard = threading.Lock()

    def drain() -> None:
        with guard:
            items = pending[:]
            pending.clear()
        for item in items:
            inbox.put_nowait(item)

    def send(item) -> None:
        # Wake the event loop only when it has nothing queued yet: one wakeup may carry several tokens.
        with guard:
            pending.append(item)
            first = len(pending) == 1
        if first:
            loop.call_soon_threadsafe(drain)

    def pump() -> None:
        try:
            for step in engine.generate(params):
                send(step)
                if params.cancel.is_set():
                    break
        except BaseException as exc:  # re-raised in the event loop below
            send(exc)
        finally:
            send(_END)

    worker = asyncio.wrap_future(engine.worker().submit(pump))
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
        # The worker notices the cancel flag at its next token; the slot is free once it has.
        await asyncio.shield(worker)


async def generate_text(engine: Engine, params: GenParams, stops: list[str], deadline: float) -> tuple[str, str, int]:
    """The whole answer: (text, finish_reason, completion_tokens).

    Runs entirely in one worker thread: waking the event loop per token costs real throughput on small CPUs.
    """
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(engine.worker(), _generate_blocking, engine, params, stops, deadline)


def _generate_blocking(engine: Engine, params: GenParams, stops: list[str], deadline: float) -> tuple[str, str, int]:
    matcher = StopMatcher(stops)
    parts: list[str] = []
    produced = 0
    finish = None
    try:
        for step in engine.generate(params):
            produced += 1
            parts.append(matcher.feed(step.text))
            if matcher.stopped:
                finish = "stop"
                break
            if time.monotonic() > deadline:
                finish = "timeout"
                break
    finally:
        params.cancel.set()
    if finish is None:
        finish = "length" if produced >= params.max_tokens else "stop"
    parts.append(matcher.flush())
    return "".join(parts), finish, produced
