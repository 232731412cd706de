"""Rebuilding one chat.completion from the SSE chunks of a streamed answer, for the capture log."""

from __future__ import annotations

import json
from typing import Any


def assemble_stream(raw: bytes) -> dict[str, Any] | None:
    """The chat.completion body equivalent to a finished stream, or None if nothing parseable came through."""
    text: dict[int, list[str]] = {}
    finish: dict[int, str | None] = {}
    first: dict[str, Any] | None = None
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
        first = first or chunk
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            index = int(choice.get("index", 0))
            delta = choice.get("delta") or {}
            text.setdefault(index, []).append(delta.get("content") or "")
            if choice.get("finish_reason"):
                finish[index] = choice["finish_reason"]
    if first is None:
        return None
    return {
        "id": first.get("id"),
        "object": "chat.completion",
        "created": first.get("created"),
        "model": first.get("model"),
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": "".join(parts)}, "finish_reason": finish.get(i)}
            for i, parts in sorted(text.items())
        ],
        "usage": usage,
    }
