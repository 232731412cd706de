"""The registry of judge-free metrics: every metric llamaduo computes without a judge is listed here.

Each entry says what it needs (a reference answer, unit tests, or tool calls) and which tasks it applies to. To add
a metric, write its function and add one `Metric(...)` line to METRICS; `evaluate.metrics` then accepts its name.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llamaduo.config import closest
from llamaduo.errors import ConfigError
from llamaduo.evaluate.metrics import text, tool_calls

BatchScorer = Callable[[list[str], list[str]], list[float]]


def _each(fn: Callable[[str, str], float]) -> BatchScorer:
    return lambda cands, refs: [fn(c, r) for c, r in zip(cands, refs, strict=True)]


def _embedding(cands: list[str], refs: list[str]) -> list[float]:
    from llamaduo.evaluate.metrics.embedding import cosine_many

    return cosine_many(cands, refs)


@dataclass(frozen=True)
class Metric:
    name: str
    needs: str
    """`reference` (compares with the reference answer), `tests` (runs unit tests in the sandbox) or `tool_calls`
    (compares the calls of answers to prompts that offered tools with the reference's calls)."""
    tasks: str | None
    """A regex on the task name limiting where the metric applies (None: every task with a reference)."""
    score: BatchScorer | None
    """Candidates and references in, 0-1 scores out (reported x100). None for pass@k, which the sandbox computes."""
    doc: str
    per_case: Callable[[Any], float | None] | None = None
    """For `tool_calls` metrics: a `tool_calls.CallCase` in, 0-1 out (None where the metric does not apply)."""

    def applies(self, task: str) -> bool:
        return self.tasks is None or re.search(self.tasks, task, re.IGNORECASE) is not None


METRICS: dict[str, Metric] = {m.name: m for m in [
    Metric("rouge_l", "reference", None, _each(text.rouge_l), "ROUGE-L F1 with stemming (rouge-score)."),
    Metric("embedding", "reference", None, _embedding, "Cosine similarity of all-MiniLM-L6-v2 embeddings."),
    Metric("exact_match", "reference", r"class|qa|extract", _each(text.exact_match), "Normalised exact match."),
    Metric("label_accuracy", "reference", r"class", _each(text.label_accuracy), "The answer states the reference label."),
    Metric("token_f1", "reference", r"qa|extract", _each(text.token_f1), "SQuAD token F1 for closed QA."),
    Metric("pass_at_k", "tests", None, None, "Unbiased pass@k of sandboxed unit tests (MBPP, HumanEval formats)."),
    Metric("tool_decision", "tool_calls", None, None, "Calls a tool exactly when the reference does (every prompt that offered tools).", tool_calls.decision),
    Metric("tool_name", "tool_calls", None, None, "Function-name accuracy: calls the reference's functions (prompts whose reference calls).", tool_calls.name_accuracy),
    Metric("tool_args_exact", "tool_calls", None, None, "Argument exact match: the reference's functions with equal JSON arguments.", tool_calls.args_exact),
    Metric("tool_schema_valid", "tool_calls", None, None, "Schema validity: every call names an offered function and its arguments validate (jsonschema).", tool_calls.schema_valid),
]}
TOOL_METRICS = tuple(name for name, m in METRICS.items() if m.needs == "tool_calls")


def get_metric(name: str) -> Metric:
    """The metric called `name`; an unknown name is a one-line error suggesting the closest."""
    if name not in METRICS:
        near = closest(name, METRICS)
        hint = f"Did you mean `{near}`?" if near else f"Known metrics: {', '.join(METRICS)}."
        raise ConfigError(f"unknown metric `{name}`", hint)
    return METRICS[name]
