"""The quality gates, in order: schema/length/language, exact dedup, near-dup (one per cluster),
decontamination against the frozen test split, and an optional LLM quality rating. Each is counted.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from llamaduo.data.hygiene import GATE_DECONTAM, GATE_EXACT, GATE_NEAR, PairFilter
from llamaduo.data.text import user_text
from llamaduo.records import Example

GATE_SCHEMA = "schema_length_language"
GATE_QUALITY = "quality"
GATES = (GATE_SCHEMA, GATE_EXACT, GATE_NEAR, GATE_DECONTAM, GATE_QUALITY)
_LATIN = re.compile(r"[A-Za-z]")
_LETTER = re.compile(r"[^\W\d_]")
_WORD = re.compile(r"[a-z]+")
_CODE_BLOCK = re.compile(r"```.*?(```|$)", re.DOTALL)
_EN_COMMON = frozenset(
    "the a an of to in and or is are was be for on with that this it as by from at what which who how write "
    "give list explain describe summarize summarise classify answer following text code function program".split()
)


class GateCount(BaseModel):
    gate: str
    checked: int = 0
    passed: int = 0
    dropped: dict[str, int] = Field(default_factory=dict)


class GateReport(BaseModel):
    """Per-gate counts of one synth run (or one apply_gates call)."""

    gates: list[GateCount] = Field(default_factory=lambda: [GateCount(gate=g) for g in GATES])
    invalid_replies: dict[str, int] = Field(default_factory=dict)
    """Generator replies dropped whole before the gates (not JSON, missing fields, empty, service errors)."""

    def count(self, gate: str) -> GateCount:
        return next(g for g in self.gates if g.gate == gate)

    def drop(self, gate: str, reason: str) -> None:
        entry = self.count(gate)
        entry.checked += 1
        entry.dropped[reason] = entry.dropped.get(reason, 0) + 1

    def pass_(self, gate: str) -> None:
        entry = self.count(gate)
        entry.checked += 1
        entry.passed += 1

    def merge(self, other: GateReport) -> None:
        for mine, theirs in zip(self.gates, other.gates, strict=True):
            mine.checked += theirs.checked
            mine.passed += theirs.passed
            for reason, count in theirs.dropped.items():
                mine.dropped[reason] = mine.dropped.get(reason, 0) + count
        for reason, count in other.invalid_replies.items():
            self.invalid_replies[reason] = self.invalid_replies.get(reason, 0) + count


def check_pair(config: Any, example: Example) -> str | None:
    """Gate 1 for one pair: the reason it fails, or None."""
    synth = config.synth
    prompt, answer = user_text(example), example.reference or ""
    if len(prompt.strip()) < max(1, synth.min_chars) or len(answer.strip()) < max(1, synth.min_chars):
        return "empty_field"
    if len(prompt) + len(answer) > synth.max_chars:
        return "too_long"
    labels = example.metadata.get("labels")
    if labels is not None and answer.strip().lower() not in {str(label).strip().lower() for label in labels}:
        return "label_not_in_set"
    if synth.language == "en" and not looks_english(prompt):
        return "wrong_language"
    return None


def looks_english(text: str) -> bool:
    """Cheap script-and-stopword test on the prose (code blocks removed): mostly Latin letters, and some
    common English words once there are enough words to tell."""
    text = _CODE_BLOCK.sub(" ", text)
    letters = _LETTER.findall(text)
    if not letters:
        return True  # nothing to judge (symbols, code)
    if len(_LATIN.findall(text)) / len(letters) < 0.8:
        return False
    tokens = _WORD.findall(text.lower())
    if len(tokens) < 8:
        return True
    return sum(t in _EN_COMMON for t in tokens) / len(tokens) >= 0.03


class GatePipeline:
    """Gates 1-4 (sync, stateful: passing pairs are remembered) and gate 5 (async, needs the judge)."""

    def __init__(self, config: Any, *, reference: Sequence[Example] = (), test: Sequence[Example] = (), report: GateReport | None = None):
        self.config = config
        self.report = report or GateReport()
        self.filter = PairFilter(config.data, test)
        self.filter.register(list(reference))

    def screen(self, candidates: Sequence[Example], report: GateReport | None = None) -> list[Example]:
        """Pairs passing gates 1-4, in order; they are registered so later copies of them are dropped."""
        report = report or self.report
        shaped = []
        for example in candidates:
            reason = check_pair(self.config, example)
            if reason is None:
                report.pass_(GATE_SCHEMA)
                shaped.append(example)
            else:
                report.drop(GATE_SCHEMA, reason)
        passed = []
        order = (GATE_EXACT, GATE_NEAR, GATE_DECONTAM)
        for example, verdict in zip(shaped, self.filter.screen(shaped), strict=True):
            failed_at = order.index(verdict.gate) if verdict else len(order)
            for gate in order[:failed_at]:
                report.pass_(gate)
            if verdict is None:
                passed.append(example)
            else:
                report.drop(verdict.gate, verdict.reason)
        return passed

    async def rate(self, examples: Sequence[Example], judge: Any, report: GateReport | None = None, stage: str = "synth") -> list[Example]:
        """Gate 5: the judge scores each pair 1-10; pairs below `synth.min_quality` (or unrateable) are dropped."""
        report = report or self.report
        bar = self.config.synth.min_quality
        if bar is None or not examples:
            return list(examples)
        from llamaduo.service import ChatRequest, ServiceError
        from llamaduo.synth.templating import load_template

        template = load_template(self.config, "", name="quality")
        requests = [
            ChatRequest(
                [{"role": "user", "content": template.render(task=e.task, prompt=user_text(e), response=e.reference or "")}],
                params={"temperature": 0.0},
                schema=QualityRating,
            )
            for e in examples
        ]
        kept = []
        for example, result in zip(examples, await judge.chat_many(requests, stage=stage), strict=True):
            reason = "judge_error" if isinstance(result, ServiceError) else ("low_quality" if result.parsed.score < bar else None)
            if reason is not None:
                report.drop(GATE_QUALITY, reason)
                self.filter.forget(example.id)
                continue
            example.metadata.setdefault("provenance", {})["quality"] = result.parsed.score
            report.pass_(GATE_QUALITY)
            kept.append(example)
        return kept


class QualityRating(BaseModel):
    score: int = Field(ge=1, le=10)
    reason: str = ""


def apply_gates(
    config: Any,
    candidates: Sequence[Example],
    *,
    reference: Sequence[Example] = (),
    test: Sequence[Example] = (),
    judge: Any = None,
) -> tuple[list[Example], GateReport]:
    """All gates over a list of pairs (sync). `reference`: pairs already kept (train); `judge`: a ServiceClient for gate 5."""
    pipeline = GatePipeline(config, reference=reference, test=test)
    passed = pipeline.screen(candidates)
    if config.synth.min_quality is not None:
        from llamaduo.service import run_sync

        passed = run_sync(_rate_with_judge(config, pipeline, passed, judge))
    return passed, pipeline.report


async def _rate_with_judge(config: Any, pipeline: GatePipeline, passed: list[Example], judge: Any) -> list[Example]:
    if judge is not None:
        return await pipeline.rate(passed, judge)
    from llamaduo.service import open_service

    async with open_service(config, "judge") as own:
        return await pipeline.rate(passed, own)


def drop_counts(report: GateReport) -> dict[str, int]:
    total: Counter[str] = Counter()
    for gate in report.gates:
        total.update(gate.dropped)
    return dict(total)
