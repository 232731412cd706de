"""One assistant turn with tools in `serve`: content and tool calls, generated in phases, arguments under their schema.

A call is written in the model's own format (engines/tools.py), `open` + {"name": ..., "arguments": ...}, but the
model never writes the JSON freely:
- tool_choice auto: the model starts freely and its text streams as content; when it writes the call opener
  (`<tool_call>` in the fallback format), that generation stops and the call is generated constrained;
- required or a named function: the opener is put in the prompt, so the turn is a call from its first token.
Each call is two constrained generations, so the name comes first and the arguments stream as they are made: the
name (an enum of the offered functions; skipped when only one can be called) and then the arguments under that
function's parameters schema. After a call a short free look-ahead shows whether the model opens another (parallel
calls); text it writes after its calls is not returned. Tokens of every phase, look-ahead included, count as
completion tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from llamaduo.deploy.generation import generate_text, stream_pieces
from llamaduo.infer.engines.base import Engine, GenParams, StopMatcher
from llamaduo.infer.engines.tools import ToolFormat, decoding_schema, new_call_id

log = logging.getLogger("llamaduo.serve")

MAX_PARALLEL_CALLS = 8
"""Calls in one turn when parallel_tool_calls is on: a model that repeats its call cannot fill the whole answer."""


@dataclass
class Content:
    text: str


@dataclass
class CallStart:
    index: int
    id: str
    name: str


@dataclass
class CallArgs:
    index: int
    text: str


@dataclass
class Done:
    finish: str
    """tool_calls, stop, length or timeout."""
    completion_tokens: int


Event = Content | CallStart | CallArgs | Done


@dataclass
class ToolPlan:
    """What one request allows: the call format, which functions, and how many calls."""

    fmt: ToolFormat
    functions: dict[str, dict[str, Any]]
    """Name -> the schema its arguments are decoded under."""
    mode: str
    """auto or required; under none only `trigger` is used, as a stop string."""
    trigger: str
    """The opener as it shows in decoded text ("" for formats whose call is a bare JSON object)."""
    lookahead: int
    """Tokens a free look-ahead may take to close one call and open the next."""
    max_calls: int = MAX_PARALLEL_CALLS
    gap: str = ""
    """What follows a key's colon in the prompt. With lm-format-enforcer nothing: the model writes the space, as in
    the ` "` token it learned (a lone space token before a quote is text it never saw). llama.cpp grammars allow no
    leading space, so there the prompt carries it."""

    @classmethod
    async def build(cls, engine: Engine, tools: list[dict[str, Any]], mode: str, forced: str | None, parallel: bool,
                    cache: dict[str, Any] | None = None) -> ToolPlan:
        """`cache` keeps the engine's format between requests (it is fixed by the model's template)."""
        cache = {} if cache is None else cache
        if "fmt" not in cache:
            fmt = ToolFormat.from_dict(await asyncio.to_thread(engine.tool_format))
            trigger, lookahead = "", 0
            if fmt.open.strip():
                ids = await asyncio.to_thread(engine.tokenize, fmt.open)
                # An opener made of special tokens is dropped from decoded text: look for what does show.
                trigger = (await asyncio.to_thread(engine.decode, ids)).strip()
                lookahead = 2 * len(ids) + 4
            cache.update(fmt=fmt, trigger=trigger, lookahead=lookahead)
        functions = {t["function"]["name"]: decoding_schema(t["function"].get("parameters")) for t in tools}
        if forced is not None:
            functions = {forced: functions[forced]}
        single = forced is not None or not parallel or not cache["trigger"]
        gap = " " if engine.name == "llamacpp" else ""
        return cls(cache["fmt"], functions, mode, cache["trigger"], cache["lookahead"], 1 if single else MAX_PARALLEL_CALLS, gap)


class ToolTurn:
    """Runs one turn; `events()` yields Content, CallStart and CallArgs as they are generated, then one Done."""

    def __init__(self, engine: Engine, plan: ToolPlan, prompt_ids: list[int], params: GenParams, stops: list[str], deadline: float,
                 content_schema: dict[str, Any] | str | None = None):
        self.engine, self.plan, self.prompt_ids, self.params = engine, plan, prompt_ids, params
        self.stops, self.deadline, self.content_schema = stops, deadline, content_schema
        self.used = 0
        self.calls = 0
        self.turn = ""
        """The assistant's text so far, as the next phase's prompt continues it."""
        self.finish = "stop"

    async def events(self) -> AsyncIterator[Event]:
        opened = True
        if self.plan.mode == "auto":
            opened = False
            async with contextlib.aclosing(self._content()) as content:
                async for event in content:
                    if event is None:
                        opened = True
                    else:
                        yield event
        else:
            self.turn = self.plan.fmt.open
        index = 0
        while opened and self.finish == "stop":
            complete = False
            async with contextlib.aclosing(self._call(index)) as call:
                async for event in call:
                    if event is None:
                        complete = True
                    else:
                        yield event
            index += 1
            if not complete or index >= self.plan.max_calls or not await self._another():
                break
        finish = "tool_calls" if self.calls and self.finish == "stop" else self.finish
        yield Done(finish, self.used)

    # ---- phases ------------------------------------------------------------------------------------

    async def _ids(self, text: str) -> tuple[list[int], int]:
        """The prompt of the next phase and how many tokens it may generate (max_tokens and the context both bound it)."""
        ids = self.prompt_ids + (await asyncio.to_thread(self.engine.tokenize, text) if text else [])
        limit = min(self.params.max_tokens - self.used, self.engine.context_length - len(ids))
        if limit <= 0:
            self.finish = "length"
        return ids, limit

    def _gen(self, ids: list[int], limit: int, schema: dict[str, Any] | str | None) -> GenParams:
        p = self.params
        return GenParams(ids, limit, p.temperature, p.top_p, p.seed, schema)

    async def _content(self) -> AsyncIterator[Content | None]:
        """Free text until the model opens a call (then yields None) or ends its turn."""
        ids, limit = await self._ids("")
        if limit <= 0:
            return
        if self.content_schema is not None:
            async for event in self._json_content(ids, limit):
                yield event
            return
        matcher = StopMatcher(self.stops)
        trigger = self.plan.trigger
        raw, sent, produced = "", 0, 0
        try:
            async with contextlib.aclosing(stream_pieces(self.engine, self._gen(ids, limit, None), [], self.deadline)) as pieces:
                async for piece in pieces:
                    produced = piece.completion_tokens
                    raw += piece.text
                    if piece.finish:
                        self.finish = piece.finish
                    at = self._find_trigger(raw)
                    if at is not None:
                        text = matcher.feed(raw[sent:at])
                        text += "" if matcher.stopped else matcher.flush()
                        if text:
                            yield Content(text)
                        if not matcher.stopped:
                            self.turn = raw[:at] + self.plan.fmt.open
                            self.finish = "stop"
                            yield None
                        return
                    # Hold back what may be the start of the opener; it must not reach the client as content.
                    safe = len(raw) if not trigger else max(sent, len(raw) - len(trigger) + 1)
                    if not trigger and not raw.strip():
                        safe = sent
                    text = matcher.feed(raw[sent:safe])
                    sent = safe
                    if text:
                        yield Content(text)
                    if matcher.stopped:
                        self.finish = "stop"
                        return
            text = matcher.feed(raw[sent:]) + matcher.flush()
            if text:
                yield Content(text)
        finally:
            self.used += produced

    def _find_trigger(self, raw: str) -> int | None:
        if self.plan.trigger:
            at = raw.find(self.plan.trigger)
            return at if at >= 0 else None
        stripped = raw.lstrip()  # a bare-JSON format: the turn is a call when it opens with {
        return len(raw) - len(stripped) if stripped.startswith("{") else None

    async def _json_content(self, ids: list[int], limit: int) -> AsyncIterator[Content | None]:
        """response_format beside tool_choice auto: peek at the first tokens for an opener, else answer under the schema."""
        if self.plan.trigger:
            before, opened = await self._watch(ids, min(limit, self.plan.lookahead))
            if opened and not before.strip():
                self.turn = before + self.plan.fmt.open
                yield None
                return
            ids, limit = await self._ids("")
            if limit <= 0 or self.finish == "timeout":
                return
        matcher = StopMatcher(self.stops)
        produced = 0
        try:
            async with contextlib.aclosing(stream_pieces(self.engine, self._gen(ids, limit, self.content_schema), [], self.deadline)) as pieces:
                async for piece in pieces:
                    produced = piece.completion_tokens
                    text = matcher.feed(piece.text) + (matcher.flush() if piece.finish else "")
                    if text:
                        yield Content(text)
                    self.finish = "stop" if matcher.stopped else (piece.finish or self.finish)
                    if matcher.stopped:
                        return
        finally:
            self.used += produced

    async def _watch(self, ids: list[int], limit: int) -> tuple[str, bool]:
        """Generate freely until the opener shows (text before it, True) or the phase ends (its text, False)."""
        raw, produced = "", 0
        try:
            async with contextlib.aclosing(stream_pieces(self.engine, self._gen(ids, limit, None), [], self.deadline)) as pieces:
                async for piece in pieces:
                    produced = piece.completion_tokens
                    raw += piece.text
                    at = raw.find(self.plan.trigger)
                    if at >= 0:
                        return raw[:at], True
                    if piece.finish == "timeout":
                        self.finish = "timeout"
        finally:
            self.used += produced
        return raw, False

    async def _call(self, index: int) -> AsyncIterator[Event | None]:
        """One call: CallStart once the name is known, CallArgs as the arguments are generated, None when complete."""
        fmt = self.plan.fmt
        gap = self.plan.gap
        head = self.turn + '{"' + fmt.name_key + '":' + gap
        if len(self.plan.functions) == 1:
            name = next(iter(self.plan.functions))
            value = ("" if gap else " ") + json.dumps(name)  # not generated: the prompt carries the space the model writes
        else:
            ids, limit = await self._ids(head)
            if limit <= 0:
                return
            names = {"type": "string", "enum": list(self.plan.functions)}
            text, finish, used = await generate_text(self.engine, self._gen(ids, limit, names), [], self.deadline)
            self.used += used
            try:
                name = json.loads(text)
            except json.JSONDecodeError:
                self.finish = finish if finish != "stop" else "length"
                return
            value = text.rstrip()
        yield CallStart(index, new_call_id(), name)
        prefix = head + value + ', "' + fmt.args_key + '":' + gap
        ids, limit = await self._ids(prefix)
        if limit <= 0:
            return
        raw, args, pending, produced, finish = "", "", "", 0, "stop"
        params = self._gen(ids, limit, self.plan.functions[name])
        try:
            async with contextlib.aclosing(stream_pieces(self.engine, params, [], self.deadline)) as pieces:
                async for piece in pieces:
                    produced = piece.completion_tokens
                    finish = piece.finish or finish
                    raw += piece.text
                    # Whitespace the enforcer allows around the object is not part of the arguments.
                    pending += piece.text if args or pending else piece.text.lstrip()
                    out = pending.rstrip()
                    if out:
                        yield CallArgs(index, out)
                        args += out
                        pending = pending[len(out):]
        finally:
            self.used += produced
        if finish == "timeout" or not _parses(args):
            # Cut off by max_tokens (or the timeout): OpenAI returns such a call as it stands, with finish_reason length.
            self.finish = "timeout" if finish == "timeout" else "length"
            if finish == "stop":
                log.warning("the engine ended a constrained tool call with arguments that do not parse: %r", args[:200])
            return
        self.calls += 1
        self.turn = prefix + raw.rstrip() + "}"
        yield None

    async def _another(self) -> bool:
        """A short free look-ahead after a call: does the model open another one? (Its other text is dropped.)"""
        if not self.plan.trigger:
            return False
        ids, limit = await self._ids(self.turn)
        before, opened = await self._watch(ids, min(limit, self.plan.lookahead)) if limit > 0 else ("", False)
        self.finish = "stop"  # the calls made are complete: a budget or deadline that ends here ends only the look-ahead
        if opened:
            self.turn += before + self.plan.fmt.open
        return opened


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


async def collect_turn(turn: ToolTurn) -> tuple[dict[str, Any], str, int]:
    """A whole tool turn: the message fields (content, tool_calls), finish_reason and completion tokens.

    `serve` answers non-streamed requests with it, and the loop's inference answers tool prompts with it, so the
    calls the judge scores are generated exactly as the deployed model generates them."""
    parts: list[str] = []
    calls: list[dict[str, Any]] = []
    done: Done | None = None
    async with contextlib.aclosing(turn.events()) as events:
        async for event in events:
            if isinstance(event, Content):
                parts.append(event.text)
            elif isinstance(event, CallStart):
                calls.append({"id": event.id, "type": "function", "function": {"name": event.name, "arguments": ""}})
            elif isinstance(event, CallArgs):
                calls[event.index]["function"]["arguments"] += event.text
            elif isinstance(event, Done):
                done = event
    assert done is not None  # events() always ends with Done
    message: dict[str, Any] = {"content": "".join(parts) or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    return message, done.finish, done.completion_tokens

