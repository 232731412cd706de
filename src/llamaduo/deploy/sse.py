"""Rebuilding one chat.completion from the SSE chunks of a streamed answer, for the capture log.

The chunks are accumulated by the openai SDK's own ChatCompletionStreamState, the code its `stream()` helper runs,
so tool calls streamed as an id and name followed by argument fragments are captured whole, as the SDK would give them
to the application. Nothing is parsed or re-serialised: JSON-mode content and call arguments are kept as sent.
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger("llamaduo.gateway")

# Fields the SDK's snapshot adds for its own parsing (structured outputs, strict tools); no part of what was sent.
_SDK_ONLY = ("parsed", "parsed_arguments")


def assemble_stream(raw: bytes) -> dict[str, Any] | None:
    """The chat.completion body equivalent to a finished stream, or None if nothing usable came through."""
    from openai.lib.streaming.chat import ChatCompletionStreamState
    from openai.types.chat import ChatCompletionChunk

    state = ChatCompletionStreamState()
    seen = False
    usage = None
    for line in raw.decode("utf-8", errors="replace").splitlines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            continue
        if not isinstance(chunk, dict) or "error" in chunk:
            return None
        if chunk.get("object", "chat.completion.chunk") != "chat.completion.chunk":
            continue  # e.g. Azure's content-filter events, which the SDK's stream helper skips too
        usage = chunk.get("usage") or usage
        try:
            state.handle_chunk(ChatCompletionChunk.construct(**chunk))
        except Exception as exc:  # a chunk the accumulator cannot place: capture nothing rather than half an answer
            log.warning("a streamed answer could not be rebuilt for the capture log: %s: %s", type(exc).__name__, exc)
            return None
        seen = True
    if not seen:
        return None
    body = _plain(state.current_completion_snapshot.to_dict(mode="json"))
    body["usage"] = usage  # the usage chunk comes last, but a provider may send more chunks after it
    return body


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k not in _SDK_ONLY}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
