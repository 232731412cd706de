"""Turn coverage-dataset examples into TRL's conversational rows, refusing what would train badly."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from llamaduo.errors import LlamaduoError
from llamaduo.records import Example

log = logging.getLogger(__name__)


def conversations(examples: Sequence[Example]) -> list[dict[str, Any]]:
    """`{"messages": [...]}` rows of the examples that end with an assistant answer."""
    rows = [
        {"messages": [m.model_dump() for m in ex.messages]}
        for ex in examples
        if ex.messages and ex.messages[-1].role == "assistant" and ex.messages[-1].content.strip()
    ]
    if not examples:
        raise LlamaduoError("the training split is empty", "Run `llamaduo data ingest` and `llamaduo data split` first, or pass examples.")
    if not rows:
        raise LlamaduoError(
            f"none of the {len(examples)} training examples ends with an assistant answer, so there is nothing to learn",
            "Make the last message of each example the assistant's reply (check the data source's field mapping).",
        )
    if len(rows) < len(examples):
        log.warning("left out %d of %d examples without a final assistant answer", len(examples) - len(rows), len(examples))
    return rows


def token_lengths(rows: list[dict[str, Any]], tokenizer: Any, template: str) -> list[int]:
    rendered = tokenizer.apply_chat_template([r["messages"] for r in rows], chat_template=template, tokenize=False)
    encoded = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    return [len(ids) for ids in encoded]


def fit_length(rows: list[dict[str, Any]], tokenizer: Any, template: str, max_len: int, overflow: str) -> list[dict[str, Any]]:
    """Never truncate: a cut answer loses its end-of-turn token and teaches the model not to stop."""
    lengths = token_lengths(rows, tokenizer, template)
    too_long = [n for n in lengths if n > max_len]
    if not too_long:
        return rows
    if overflow == "error":
        raise LlamaduoError(
            f"{len(too_long)} of {len(rows)} training examples are longer than train.max_seq_len={max_len} tokens (longest {max(too_long)})",
            f"Raise train.max_seq_len to {max(too_long)}, or set train.overflow=drop to leave them out.",
        )
    kept = [r for r, n in zip(rows, lengths, strict=True) if n <= max_len]
    if not kept:
        raise LlamaduoError(f"every training example is longer than train.max_seq_len={max_len} tokens", f"Raise train.max_seq_len (shortest is {min(lengths)}).")
    log.warning("left out %d examples longer than %d tokens", len(rows) - len(kept), max_len)
    return kept


def lora_rank(examples: int, rank: int | None, alpha: int | None) -> tuple[int, int]:
    """The paper's rule: a larger dataset earns a larger adapter (8/16 up to 16k, 16/32 up to 64k, then 32/64)."""
    if rank is None:
        rank = 8 if examples <= 16_000 else 16 if examples <= 64_000 else 32
    return rank, alpha if alpha is not None else 2 * rank
