"""Turn coverage-dataset examples into TRL's conversational rows, refusing what would train badly."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from llamaduo.errors import LlamaduoError
from llamaduo.records import Example

log = logging.getLogger(__name__)


def conversations(examples: Sequence[Example]) -> list[dict[str, Any]]:
    """`{"messages": [...]}` rows (plus `tools` where the example offered some) of the examples that end with an
    assistant answer: text, tool calls, or both. Messages stay in the OpenAI shape until `chat_inputs` renders them."""
    rows = []
    for ex in examples:
        last = ex.messages[-1] if ex.messages else None
        if last is None or last.role != "assistant" or not ((last.content or "").strip() or last.tool_calls):
            continue
        row: dict[str, Any] = {"messages": [m.model_dump() for m in ex.messages]}
        if ex.tools:
            row["tools"] = ex.tools
        rows.append(row)
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


def uses_tools(rows: list[dict[str, Any]]) -> bool:
    """Whether any row offers tools or holds tool calls or results (such rows are tokenized by llamaduo, see below)."""
    return any(r.get("tools") or any(m.get("tool_calls") or m["role"] == "tool" for m in r["messages"]) for r in rows)


def chat_inputs(row: dict[str, Any], template: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Messages and template variables of one row, through the renderer `serve` uses (engines/tools.py): the
    template's own tool support when it has one, else the fallback format. Plain rows come back unchanged."""
    from llamaduo.infer.engines.tools import prepare_chat

    return prepare_chat(row["messages"], row.get("tools"), template)


def tokenized_rows(rows: list[dict[str, Any]], tokenizer: Any, inference: str, training: str, assistant_only: bool) -> list[dict[str, Any]]:
    """`input_ids` (and `assistant_masks`) of each row, rendered as `chat_inputs` says.

    TRL would put the rows through `datasets`, whose Arrow schema merges the argument objects of all calls into one
    struct, so a call to one function would render with every other function's arguments as nulls. Tokenizing here
    keeps each call as it was; TRL builds the labels from the masks exactly as for rows it tokenizes itself.
    """
    out = []
    for row in rows:
        messages, extra = chat_inputs(row, inference)
        enc = tokenizer.apply_chat_template(
            messages, chat_template=training if assistant_only else inference, tokenize=True, return_dict=True,
            return_assistant_tokens_mask=assistant_only, **extra,
        )
        item = {"input_ids": list(enc["input_ids"])}
        if assistant_only:
            item["assistant_masks"] = list(enc["assistant_masks"])
            if 1 not in item["assistant_masks"]:
                raise LlamaduoError("a training example has no assistant tokens in the loss", "Set train.chat_template=chatml.")
        out.append(item)
    return out


def token_lengths(rows: list[dict[str, Any]], tokenizer: Any, template: str) -> list[int]:
    if uses_tools(rows):
        rendered = [tokenizer.apply_chat_template(m, chat_template=template, tokenize=False, **extra) for m, extra in (chat_inputs(r, template) for r in rows)]
    else:
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
