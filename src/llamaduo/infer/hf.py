"""transformers backend: batched generation, prompts sorted by length and left-padded, bf16 where native."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llamaduo.infer.backends import Generation, sampling_params


class TransformersBackend:
    name = "transformers"

    def __init__(self, config: Any, model: str):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from llamaduo.errors import LlamaduoError
        from llamaduo.train.base_model import resolve_base_model
        from llamaduo.train.device import bf16_supported, cuda_available
        from llamaduo.train.outputs import model_hash

        self.infer = config.infer
        path = resolve_base_model(model)
        self.path = path
        self.fingerprint = model_hash(Path(path))
        self.device = "cuda" if cuda_available() else "cpu"
        self.dtype = torch.bfloat16 if bf16_supported(self.infer.precision) else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        if not self.tokenizer.chat_template:
            raise LlamaduoError(f"the model in {path} has no chat template", "Infer with a model trained by `llamaduo train` (it saves its template), or an instruct model.")
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype).to(self.device).eval()
        eos = self.model.generation_config.eos_token_id
        self.stop_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        if not self.stop_ids and self.tokenizer.eos_token_id is not None:
            self.stop_ids = {self.tokenizer.eos_token_id}
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def render(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def generate(self, prompts: list[list[dict[str, str]]], samples: int) -> list[list[Generation]]:
        import torch

        texts = [self.render(p) for p in prompts]
        encoded = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        # Sorting by length keeps each batch's padding (wasted compute) small.
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        params = sampling_params(self.infer)
        seed = params.pop("seed", None)
        results: list[list[Generation]] = [[] for _ in texts]
        size = self.infer.batch_size
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            batch = self.tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, padding=True, return_tensors="pt").to(self.device)
            if seed is not None:
                torch.manual_seed(seed + start)
            with torch.inference_mode():
                out = self.model.generate(
                    **batch, num_return_sequences=samples, eos_token_id=sorted(self.stop_ids),
                    pad_token_id=self.tokenizer.pad_token_id, **params,
                )
            new = out[:, batch["input_ids"].shape[1] :].tolist()
            for row, tokens in enumerate(new):
                prompt_i = idx[row // samples]
                results[prompt_i].append(self._generation(tokens, len(encoded[prompt_i])))
        return results

    def _generation(self, tokens: list[int], prompt_tokens: int) -> Generation:
        stop = next((i for i, t in enumerate(tokens) if t in self.stop_ids), None)
        kept = tokens if stop is None else tokens[:stop]
        return Generation(
            text=self.tokenizer.decode(kept, skip_special_tokens=True).strip(),
            finish_reason="length" if stop is None else "stop",
            prompt_tokens=prompt_tokens,
            completion_tokens=len(kept) + (stop is not None),
        )

    def close(self) -> None:
        self.model = None
