"""`llamaduo data stats`: counts per task, split and source, and token-length percentiles.

Token counts default to a regex estimate (words plus punctuation marks: fast, and within ~15% of BPE
counts on English prose); `tokenizer=` names a `tokenizer.json` (file or folder) or `minilm` for exact counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from llamaduo.config import Config
from llamaduo.data.store import SPLITS, DatasetStore
from llamaduo.data.decontam import embedding_model_path
from llamaduo.data.text import estimate_tokens, user_text
from llamaduo.errors import LlamaduoError, MissingExtra

PERCENTILES = (50, 90, 99)


class Lengths(BaseModel):
    p50: int
    p90: int
    p99: int
    max: int


class TaskStats(BaseModel):
    rows: int
    prompt_tokens: Lengths
    answer_tokens: Lengths
    """Answer lengths count tool calls (name and JSON arguments) as text."""
    with_tools: int = 0
    """Rows that offer tool definitions."""
    tool_answers: int = 0
    """Rows whose answer calls at least one tool (the rest of `with_tools` answer in text: a decision to learn too)."""
    functions: dict[str, int] = Field(default_factory=dict)
    """Calls per function name in the answers, most called first."""


class SplitStats(BaseModel):
    version: str
    rows: int
    tasks: dict[str, TaskStats] = Field(default_factory=dict)
    sources: dict[str, int] = Field(default_factory=dict)


class StatsReport(BaseModel):
    store: str
    tokenizer: str
    """Which token counter produced the lengths."""
    test_hash: str | None = None
    splits: dict[str, SplitStats] = Field(default_factory=dict)


def token_counter(tokenizer: str | None = None) -> tuple[str, Callable[[list[str]], list[int]]]:
    """A token counter and its name: the regex estimate, or a Hugging Face `tokenizers` file."""
    if not tokenizer:
        return "regex estimate (words + punctuation)", lambda texts: [estimate_tokens(t) for t in texts]
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise MissingExtra("tokenizers", "test") from None
    path = Path(embedding_model_path()) if tokenizer == "minilm" else Path(tokenizer)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise LlamaduoError(f"no tokenizer file at {path}", "Pass a tokenizer.json, a folder holding one, or `minilm`.")
    try:
        loaded = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed files
        raise LlamaduoError(f"cannot read tokenizer {path}: {exc}", "Pass a Hugging Face tokenizer.json.") from None
    loaded.no_truncation()
    loaded.no_padding()

    def count(texts: list[str]) -> list[int]:
        return [len(e.ids) for e in loaded.encode_batch(texts, add_special_tokens=False)]

    return f"tokenizer {path}", count


def _lengths(values: list[int]) -> Lengths:
    if not values:
        return Lengths(p50=0, p90=0, p99=0, max=0)
    p = np.percentile(np.asarray(values), PERCENTILES)
    return Lengths(p50=int(p[0]), p90=int(p[1]), p99=int(p[2]), max=int(max(values)))


def dataset_stats(config: Config, tokenizer: str | None = None) -> StatsReport:
    """Stats of the latest version of every split in the store."""
    store = DatasetStore(config.path(config.data.store))
    name, count = token_counter(tokenizer)
    report = StatsReport(store=str(store.root), tokenizer=name, test_hash=store.test_hash())
    for split in SPLITS:
        version = store.latest(split)
        if version is None:
            continue
        examples = store.examples(split, version)
        prompts = count([user_text(e) for e in examples])
        answers = count([e.reference or "" for e in examples])
        stats = SplitStats(version=version, rows=len(examples), sources=dict(Counter(e.source for e in examples).most_common()))
        for task in sorted({e.task for e in examples}):
            idx = [i for i, e in enumerate(examples) if e.task == task]
            calls = [examples[i].reference_tool_calls or [] for i in idx]
            stats.tasks[task] = TaskStats(
                rows=len(idx),
                prompt_tokens=_lengths([prompts[i] for i in idx]),
                answer_tokens=_lengths([answers[i] for i in idx]),
                with_tools=sum(1 for i in idx if examples[i].tools),
                tool_answers=sum(1 for c in calls if c),
                functions=dict(Counter(call.function.name for c in calls for call in c).most_common()),
            )
        report.splits[split] = stats
    return report
