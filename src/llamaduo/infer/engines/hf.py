"""The transformers engine: a saved model folder (or a GGUF file, dequantized) run with `model.generate`.

Batches of prompts (the loop's inference) and single token streams (serve) share one model, one dtype policy and
one set of decoding arguments.

JSON schemas are enforced token by token with lm-format-enforcer's character-level JSON parser.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llamaduo.infer.engines import EngineSpec
from llamaduo.infer.engines.base import (
    ANY_JSON, Engine, EngineError, EngineStopped, GenerationFailed, Generation, GenParams, IncrementalDecoder, StepOut,
)
from llamaduo.infer.engines.policy import torch_dtype, transformers_decoding
from llamaduo.errors import LlamaduoError, MissingExtra

_DONE = object()


class _NoCache(dict):
    def __contains__(self, key) -> bool:
        return False

    def __setitem__(self, key, value) -> None:
        return None


class TransformersEngine(Engine):
    name = "transformers"
    supports_json_schema = True

    def __init__(self, spec: EngineSpec):
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise MissingExtra(exc.name or "transformers", "train") from None
        path = Path(spec.model).expanduser()
        if not path.exists():
            from llamaduo.train.base_model import resolve_base_model

            path = resolve_base_model(spec.model)  # a hub id, or the packaged SmolLM2 (converted offline)
        kwargs: dict[str, Any] = {}
        folder = path
        if path.is_file() and path.suffix == ".gguf":
            folder, kwargs = path.parent, {"gguf_file": path.name}
        elif not (path / "config.json").is_file():
            raise LlamaduoError(f"{path} is neither a model folder with config.json nor a .gguf file", "Pass a run's merged/ folder or a GGUF file.")
        self._torch = torch
        self.path = path
        self.spec = spec
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.dtype = torch_dtype(spec.precision)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=self.dtype, **kwargs).to(self.device).eval()
        self.model_id = spec.model_id or (path.parent.parent.name if path.name == "merged" else path.name)
        self.context_length = spec.context_length or int(getattr(self.model.config, "max_position_embeddings", 2048))
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids: list[int] = sorted({e for e in (eos if isinstance(eos, list) else [eos]) if e is not None})
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else (self.eos_ids or [0])[0]
        # One generate at a time: on CPU parallel generates only fight for the same cores.
        self._lock = threading.Lock()
        self._json_tokenizer_data = None
        self._closed = False

    @property
    def fingerprint(self) -> str:
        from llamaduo.train.outputs import model_hash

        return model_hash(self.path if self.path.is_dir() else self.path.parent)

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "device": self.device, "dtype": str(self.dtype).removeprefix("torch.")}

    # ---- prompt ----------------------------------------------------------------------------------

    @property
    def chat_template(self) -> str | None:
        return getattr(self.tokenizer, "chat_template", None)

    def render_chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        if not self.chat_template:
            raise EngineError("this model has no chat template; use /v1/completions or save a tokenizer with chat_template set")
        from llamaduo.infer.engines.tools import prepare_chat

        messages, extra = prepare_chat(messages, tools, self.chat_template)
        try:
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **extra)
        except Exception as exc:  # jinja raises TemplateError from raise_exception(); keep the server up
            raise EngineError(f"the model's chat template rejected these messages: {exc}") from None

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def tokenize_plain(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # ---- generation ------------------------------------------------------------------------------

    def generate(self, params: GenParams) -> Iterator[StepOut]:
        if self._closed:
            raise EngineStopped("the engine has been stopped")
        torch = self._torch
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        tokens: queue.Queue = queue.Queue()

        class _Streamer(BaseStreamer):
            first = True

            def put(self, value):  # the first call carries the prompt
                if self.first:
                    self.first = False
                    return
                for tok in value.reshape(-1).tolist():
                    tokens.put(tok)

            def end(self):
                tokens.put(_DONE)

        class _Cancel(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), params.cancel.is_set(), dtype=torch.bool, device=input_ids.device)

        processors = LogitsProcessorList()
        if params.json_schema is not None:
            processors.append(self._json_processor(params.json_schema))
        kwargs: dict[str, Any] = dict(
            input_ids=torch.tensor([params.prompt_ids], device=self.device),
            attention_mask=torch.ones((1, len(params.prompt_ids)), dtype=torch.long, device=self.device),
            max_new_tokens=params.max_tokens,
            eos_token_id=self.eos_ids or None,
            pad_token_id=self.pad_id,
            streamer=_Streamer(),
            stopping_criteria=StoppingCriteriaList([_Cancel()]),
            logits_processor=processors,
            **transformers_decoding(params),
        )
        failure: list[BaseException] = []

        def work() -> None:
            with self._lock:
                try:
                    if params.seed is not None:
                        torch.manual_seed(params.seed)
                    with torch.inference_mode():
                        self.model.generate(**kwargs)
                except BaseException as exc:  # surfaced to the caller's thread below
                    failure.append(exc)
                    tokens.put(_DONE)

        thread = threading.Thread(target=work, daemon=True, name="llamaduo-generate")
        thread.start()
        decoder = IncrementalDecoder(self.decode)
        try:
            while True:
                tok = tokens.get()
                if tok is _DONE:
                    break
                if tok in self.eos_ids:
                    break
                yield StepOut(decoder.push(tok), tok)
        finally:
            params.cancel.set()
            thread.join()
        if failure:
            raise GenerationFailed(f"generation failed: {type(failure[0]).__name__}: {failure[0]}")

    def generate_batch(self, prompts: list[list[int]], params: GenParams, samples: int = 1) -> list[list[Generation]]:
        """Prompts sorted by length and left-padded into batches of spec.batch_size; K samples per prompt."""
        if self._closed:
            raise EngineStopped("the engine has been stopped")
        torch = self._torch
        # Sorting by length keeps each batch's padding (wasted compute) small.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        results: list[list[Generation]] = [[] for _ in prompts]
        size = self.spec.batch_size
        decoding = transformers_decoding(params)
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            batch = self.tokenizer.pad({"input_ids": [prompts[i] for i in idx]}, padding=True, padding_side="left", return_tensors="pt").to(self.device)
            processors = []
            if params.json_schema is not None:
                processors.append(self._json_processor(params.json_schema))
            with self._lock, torch.inference_mode():
                if params.seed is not None:
                    torch.manual_seed(params.seed + start)
                out = self.model.generate(
                    **batch, num_return_sequences=samples, max_new_tokens=params.max_tokens, eos_token_id=self.eos_ids or None,
                    pad_token_id=self.pad_id, logits_processor=processors or None, **decoding,
                )
            new = out[:, batch["input_ids"].shape[1] :].tolist()
            for row, tokens in enumerate(new):
                prompt_i = idx[row // samples]
                results[prompt_i].append(self._finished(tokens, len(prompts[prompt_i])))
        return results

    def _finished(self, tokens: list[int], prompt_tokens: int) -> Generation:
        stop = next((i for i, t in enumerate(tokens) if t in self.eos_ids), None)
        kept = tokens if stop is None else tokens[:stop]
        return Generation(
            text=self.decode(kept), finish_reason="length" if stop is None else "stop",
            prompt_tokens=prompt_tokens, completion_tokens=len(kept) + (stop is not None), token_ids=kept,
        )

    def _json_processor(self, schema: dict[str, Any] | str):
        try:
            from lmformatenforcer import CharacterLevelParserConfig, JsonSchemaParser, TokenEnforcer
        except ImportError:
            raise EngineError("JSON schemas on the transformers engine need lm-format-enforcer: pip install 'llamaduo[serve]'") from None
        from transformers import LogitsProcessor

        try:
            parser = JsonSchemaParser(None if schema == ANY_JSON else schema)
        except Exception as exc:
            raise EngineError(f"response_format.json_schema is not a usable JSON schema: {exc}") from None
        data = self._enforcer_data()
        enforcer = TokenEnforcer(data, parser)
        # TokenEnforcer replaces the parser's config; cap whitespace afterwards so a weak model cannot pad forever,
        # and drop its allowed-token cache, whose key ignores the whitespace counter.
        parser.config = CharacterLevelParserConfig(alphabet=data.tokenizer_alphabet, max_consecutive_whitespaces=2)
        enforcer.allowed_token_cache = _NoCache()
        torch = self._torch

        class _JsonOnly(LogitsProcessor):
            def __call__(self, input_ids, scores):
                mask = torch.full_like(scores, float("-inf"))
                for row, seq in enumerate(input_ids.tolist()):
                    allowed = enforcer.get_allowed_tokens(seq).allowed_tokens
                    mask[row, allowed] = 0
                return scores + mask

        return _JsonOnly()

    def _enforcer_data(self):
        """The tokenizer's vocabulary as lm-format-enforcer wants it (computed once; its transformers glue predates transformers 5)."""
        if self._json_tokenizer_data is None:
            from lmformatenforcer import TokenEnforcerTokenizerData

            tok = self.tokenizer
            special = set(tok.all_special_ids)
            zero = tok.encode("0", add_special_tokens=False)[-1]
            regular = []
            for idx in range(len(tok)):
                if idx in special:
                    continue
                # Decoding after a "0" reveals whether the token starts a new word (leading space).
                after_zero = tok.decode([zero, idx])[1:]
                alone = tok.decode([idx])
                if "\ufffd" in alone or any(c < " " for c in alone):
                    # Left out: fragments of a multi-byte character, which the enforcer cannot follow (they decode to
                    # U+FFFD until complete, and it loses its place, after which any token passes), and control
                    # characters, which its string cache lets into JSON strings although JSON forbids them there.
                    # JSON needs neither: whole-character tokens and spaces remain.
                    continue
                regular.append((idx, after_zero, len(after_zero) > len(alone)))
            eos = self.eos_ids if len(self.eos_ids) > 1 else (self.eos_ids[0] if self.eos_ids else tok.eos_token_id)
            vocab = max(len(tok), int(self.model.config.vocab_size))
            self._json_tokenizer_data = TokenEnforcerTokenizerData(
                regular, lambda ids: tok.decode(ids).rstrip("\ufffd"), eos, False, vocab
            )
        return self._json_tokenizer_data

    def close(self) -> None:
        self._closed = True
