"""What every engine provides (chat rendering, tokenization, a token stream, batched answers), plus shared decoding helpers.

The loop's inference, `serve`, the export parity check and the demo's stand-in all drive these engines, so the answers
the judge scores and the answers the deployed artifact gives come from the same code.
"""

from __future__ import annotations

import concurrent.futures
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel

ANY_JSON = "any"
"""`json_schema` value asking for any JSON object (OpenAI's response_format json_object)."""


@dataclass
class GenParams:
    """One generation request, already validated and clamped by the server."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    json_schema: dict[str, Any] | str | None = None
    """A JSON schema, ANY_JSON, or None for free text."""
    cancel: threading.Event = field(default_factory=threading.Event)
    """Set by the server when the client left, a stop string matched or the timeout passed."""

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


class Generation(BaseModel):
    """One whole answer of a batch."""

    text: str
    finish_reason: str
    """`stop` when the model ended its turn, `length` when it hit max_tokens."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    token_ids: list[int] = []
    """The generated ids, end-of-turn excluded (the parity tests compare them)."""
    tool_calls: list[dict[str, Any]] | None = None
    """OpenAI-shaped calls, for an answer to a prompt that offered tools (the text is then the content beside them)."""


@dataclass
class StepOut:
    """Text produced by one generated token (may be empty while a multi-byte character is incomplete)."""

    text: str
    token_id: int


class EngineError(Exception):
    """The engine cannot serve this request (bad template, unsupported option); `status` is the HTTP answer."""

    status = 400


class EngineStopped(EngineError):
    """The engine was closed; a gateway in local mode falls back on the 503."""

    status = 503


class GenerationFailed(EngineError):
    """The model itself failed mid-generation (a bug or resource problem, not the request's fault)."""

    status = 500


class EngineCrashed(EngineError):
    """The engine's worker process died (native crash, kill, out of memory) or hung; it is being restarted."""

    status = 503


class Engine(ABC):
    """A loaded local model. Methods are blocking; the server calls them from worker threads."""

    name: str = ""
    model_id: str = ""
    context_length: int = 0
    supports_json_schema: bool = False

    @abstractmethod
    def render_chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        """The prompt text produced by the model's own chat template, ready for the assistant's turn.

        `tools` (OpenAI function definitions) and tool turns in `messages` render through engines/tools.py: the
        template's own tool support when it has one, else the documented fallback format.
        """

    def tool_format(self) -> dict[str, Any]:
        """How this model writes a tool call (engines/tools.py ToolFormat, as a dict that crosses the worker pipe)."""
        from llamaduo.infer.engines.tools import tool_format

        return tool_format(getattr(self, "chat_template", None)).as_dict()

    @abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """Token ids of already-rendered text (special tokens in the text are parsed, no BOS added)."""

    @abstractmethod
    def tokenize_plain(self, text: str) -> list[int]:
        """Token ids of a raw completion prompt, with the model's BOS where it uses one."""

    @abstractmethod
    def decode(self, ids: list[int]) -> str:
        """Text of generated ids, special tokens dropped."""

    @abstractmethod
    def generate(self, params: GenParams) -> Iterator[StepOut]:
        """Yield one StepOut per generated token until an end-of-turn token, max_tokens or cancel."""

    def answer_chats(self, chats: list[list[dict[str, Any]]], params: GenParams, samples: int = 1) -> list[list[Generation]]:
        """The loop's entry point: render each chat with the model's template, tokenize, and generate in batches."""
        return self.generate_batch([self.tokenize(self.render_chat(c)) for c in chats], params, samples)

    def generate_batch(self, prompts: list[list[int]], params: GenParams, samples: int = 1) -> list[list[Generation]]:
        """`samples` answers per prompt (sample k uses seed + k), in the prompts' order.

        This default runs the token stream one answer at a time; engines that batch (transformers) override it.
        """
        results = []
        for ids in prompts:
            row = []
            for k in range(samples):
                seed = None if params.seed is None else params.seed + k
                gp = GenParams(list(ids), params.max_tokens, params.temperature, params.top_p, seed, params.json_schema)
                tokens = [step.token_id for step in self.generate(gp)]
                row.append(Generation(
                    text=self.decode(tokens), finish_reason="length" if len(tokens) >= params.max_tokens else "stop",
                    prompt_tokens=len(ids), completion_tokens=len(tokens), token_ids=tokens,
                ))
            results.append(row)
        return results

    _worker: concurrent.futures.ThreadPoolExecutor | None = None
    _closed: bool = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def ready(self) -> bool:
        """Whether a request can start now (a worker-process engine is not ready while it restarts)."""
        return not self._closed

    def describe(self) -> dict[str, Any]:
        """What /health and the run records say about the engine (which native path ran, for instance)."""
        return {"engine": self.name}

    def worker(self) -> concurrent.futures.ThreadPoolExecutor:
        """The one thread every generation of this engine runs on.

        Generations take turns anyway (one model, one KV cache), and a fixed thread keeps a single OpenMP team:
        a fresh thread per request gets a fresh team while the old one still spins, halving throughput on small CPUs.
        """
        if self._worker is None:
            self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"llamaduo-{self.name}")
        return self._worker

    def close(self) -> None:
        """Release the model; later generate calls fail (the gateway test uses this as 'engine down')."""


class IncrementalDecoder:
    """Turns a growing list of token ids into new text, holding back an incomplete UTF-8 character."""

    def __init__(self, decode):
        self._decode = decode
        self._ids: list[int] = []
        self._emitted = ""

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        text = self._decode(self._ids)
        if text.endswith("\ufffd"):
            return ""
        new = text[len(self._emitted):] if text.startswith(self._emitted) else ""
        self._emitted = text
        return new


class StopMatcher:
    """Applies OpenAI `stop` strings to streamed text: emits what can no longer start a stop string."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self._hold = max((len(s) for s in self.stops), default=1) - 1
        self._buffer = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        self._buffer += text
        hits = [self._buffer.find(s) for s in self.stops if s in self._buffer]
        if hits:
            self.stopped = True
            out, self._buffer = self._buffer[: min(hits)], ""
            return out
        if self._hold <= 0:
            out, self._buffer = self._buffer, ""
            return out
        cut = len(self._buffer) - self._hold
        out, self._buffer = (self._buffer[:cut], self._buffer[cut:]) if cut > 0 else ("", self._buffer)
        return out

    def flush(self) -> str:
        out, self._buffer = ("" if self.stopped else self._buffer), ""
        return out


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _strftime_now(fmt: str) -> str:
    import datetime as dt

    return dt.datetime.now().strftime(fmt)


def render_template(template: str, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **special: Any) -> str:
    """Render a Hugging Face chat template the way transformers does (sandboxed Jinja, same helpers).

    Used for GGUF models, whose template travels as metadata, so that both engines render identical prompts.
    """
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt, **special)
    except TemplateError as exc:
        raise EngineError(f"the model's chat template rejected these messages: {exc}") from None


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys: bool = False) -> str:
    import json

    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
