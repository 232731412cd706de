"""Judge-free scoring of answers: the reference and tool-call metrics of the registry, and pass@k through the sandbox."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from llamaduo.evaluate.config import EvalConfig
from llamaduo.evaluate.metrics import Metric
from llamaduo.evaluate.metrics.tool_calls import CallCase
from llamaduo.evaluate.metrics.passk import extract_code, has_tests, pass_at_k, program_with_tests
from llamaduo.records import Answer, ToolCall


@dataclass
class Item:
    """An answer with what judging it needs, looked up from the test split when the answer lacks it."""

    answer: Answer
    instruction: str
    reference: str | None
    tests: dict[str, Any] = field(default_factory=dict)
    tools: list[dict[str, Any]] | None = None
    """The tool definitions the prompt offered (None: not a tool-calling prompt)."""
    reference_calls: list[ToolCall] | None = None

    @property
    def call_case(self) -> CallCase | None:
        """The answer's calls beside the reference's, for prompts that offered tools."""
        if self.tools is None:
            return None
        return CallCase(self.answer.tool_calls or [], self.reference_calls or [], self.tools)


def reference_scores(items: list[Item], metric: Metric) -> list[float | None]:
    """0-100 scores of one reference metric (None where it does not apply)."""
    chosen = [i for i, it in enumerate(items) if it.reference is not None and metric.applies(it.answer.task) and not it.tests]
    out: list[float | None] = [None] * len(items)
    if chosen and metric.score is not None:
        values = metric.score([items[i].answer.full_text for i in chosen], [items[i].reference or "" for i in chosen])
        for i, v in zip(chosen, values, strict=True):
            out[i] = 100.0 * float(v)
    return out


def tool_scores(items: list[Item], metric: Metric) -> list[float | None]:
    """0-100 scores of one tool-call metric: None for prompts without tools and where the metric does not apply."""
    out: list[float | None] = []
    for it in items:
        case = it.call_case
        value = metric.per_case(case) if case is not None and metric.per_case is not None and metric.applies(it.answer.task) else None
        out.append(None if value is None else 100.0 * value)
    return out


@dataclass
class PassAtK:
    per_prompt: dict[str, dict[int, float]]
    """example_id -> k -> pass@k (0-1)."""
    statuses: list[str]
    """Per item: `passed`, or `failed: reason`, or '' where no tests apply."""
    counts: dict[str, int]
    isolation: str
    skipped_k: list[int]


def run_pass_at_k(items: list[Item], config: EvalConfig) -> PassAtK | None:
    """Run every sample's code against its prompt's tests in the sandbox; pass@k per prompt over its K samples."""
    chosen = [i for i, it in enumerate(items) if it.tests and has_tests(it.tests)]
    if not chosen:
        return None
    from llamaduo.evaluate.sandbox import Sandbox

    sandbox = Sandbox(config.sandbox)
    programs = [program_with_tests(extract_code(items[i].answer.text), items[i].tests) for i in chosen]
    results = sandbox.run_many(programs)
    statuses = [""] * len(items)
    counts: dict[str, int] = defaultdict(int)
    per_example: dict[str, list[bool]] = defaultdict(list)
    for i, res in zip(chosen, results, strict=True):
        statuses[i] = "passed" if res.passed else f"{res.status}: {res.reason}"
        if not res.passed:
            counts[res.status] += 1
        per_example[items[i].answer.example_id].append(res.passed)
    per_prompt: dict[str, dict[int, float]] = {}
    skipped: set[int] = set()
    for example_id, passes in per_example.items():
        n, c = len(passes), sum(passes)
        per_prompt[example_id] = {}
        for k in config.pass_k:
            if k <= n:
                per_prompt[example_id][k] = pass_at_k(n, c, k)
            else:
                skipped.add(k)
    return PassAtK(per_prompt, statuses, dict(counts), sandbox.isolation, sorted(skipped))
