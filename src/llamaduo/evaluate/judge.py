"""The service-LLM judge: M structured judgments per answer, robust to bad replies, pointwise or pairwise.

A reply that does not parse (not JSON, a missing key, a score out of range, a refusal) is asked again a bounded
number of times with cache-distinct sample indices, then recorded as a failed judgment with its reason:
never a crash, never a silent 0. "85.5" and "85/100" are read as the numbers they mean.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from llamaduo.errors import BudgetExceeded
from llamaduo.evaluate.rubric import Rubric, fence
from llamaduo.records import Answer

REASON_CHARS = 500
# Advertised in the schema only (validation stays lenient and trims at REASON_CHARS): constrained decoders such as
# llama.cpp grammars then must close the string, so a small judge cannot ramble into max_tokens and an invalid reply.
REASON_SCHEMA_CHARS = 240
Outcome = Literal["win", "tie", "loss"]


def _score(value: Any) -> float:
    from llamaduo.service import parse_score

    return parse_score(value)


class PointwiseVerdict(BaseModel):
    """What the pointwise rubric asks the judge to return (also sent as the JSON schema)."""

    similarity: float = Field(ge=0, le=100)
    similarity_reason: str = Field(json_schema_extra={"maxLength": REASON_SCHEMA_CHARS})
    precision: float = Field(ge=0, le=100)
    precision_reason: str = Field(json_schema_extra={"maxLength": REASON_SCHEMA_CHARS})

    @field_validator("similarity", "precision", mode="before")
    @classmethod
    def _lenient(cls, value: Any) -> float:
        return _score(value)


class PairVerdict(BaseModel):
    """What the pairwise rubric asks the judge to return."""

    winner: Literal["A", "B", "tie"]
    reason: str = Field(json_schema_extra={"maxLength": REASON_SCHEMA_CHARS})

    @field_validator("winner", mode="before")
    @classmethod
    def _normalise(cls, value: Any) -> Any:
        if isinstance(value, str):
            word = re.sub(r"^(answer|response|output)\s+", "", value.strip().strip("\"'.").lower())
            return {"a": "A", "b": "B", "tie": "tie", "draw": "tie", "equal": "tie"}.get(word, value)
        return value


class Judgment(BaseModel):
    """One of the M judgments of one answer by one judge (pairwise: of one order)."""

    example_id: str
    task: str
    sample: int
    """The answer's index among the K samples of its prompt."""
    judge: int
    judge_model: str
    repeat: int
    order: str = ""
    """Pairwise only: `AB` (candidate shown first) or `BA`."""
    ok: bool
    scores: dict[str, float] = Field(default_factory=dict)
    reasons: dict[str, str] = Field(default_factory=dict)
    outcome: Outcome | None = None
    """Pairwise only: the candidate's result against the reference in this judgment."""
    error: str | None = None


def failure_kind(reason: str) -> str:
    """A short class of a failure reason, for the counts in reports."""
    text = reason.lower()
    for needle, kind in (("not valid json", "not JSON"), ("outside the range", "score out of range"),
                         ("more than its maximum", "score out of range"), ("field required", "missing key"),
                         ("lacks", "missing key"), ("not a number", "score not a number"),
                         ("not a finite", "score not a number"), ("input should be", "wrong value"),
                         ("budget", "budget")):
        if needle in text:
            return kind
    return "service error"


class JudgeRunner:
    """Asks one judge (an open ServiceClient) for M judgments of each answer."""

    def __init__(self, client: Any, index: int, rubric: Rubric, *, repeats: int, retries: int, max_chars: int,
                 on_done: Any = None, stage: str = "evaluate"):
        self.client, self.index, self.rubric = client, index, rubric
        self.stage = stage
        """The ledger stage the requests are booked to."""
        self.on_done = on_done or (lambda judgments: None)
        """Called with each answer's judgments as soon as they exist (the crash-safe journal)."""
        self.repeats, self.retries, self.max_chars = repeats, retries, max_chars
        self.model = f"{client.model.provider}/{client.model.model}"

    async def pointwise(self, answers: list[Answer], instructions: list[str], extras: list[dict[str, str]] | None = None) -> list[Judgment]:
        """`extras`: more fenced variables per answer for the rubric (the tool rubric's tools, conversation, checks)."""
        extras = extras or [{}] * len(answers)
        jobs = [self._pointwise_one(a, ins, ex) for a, ins, ex in zip(answers, instructions, extras, strict=True)]
        return [j for group in await asyncio.gather(*jobs) for j in group]

    async def pairwise(self, answers: list[Answer], instructions: list[str]) -> list[Judgment]:
        jobs = []
        for answer, ins in zip(answers, instructions, strict=True):
            jobs.append(self._pair_one(answer, ins, "AB"))
            jobs.append(self._pair_one(answer, ins, "BA"))
        return [j for group in await asyncio.gather(*jobs) for j in group]

    async def _pointwise_one(self, answer: Answer, instruction: str, extra: dict[str, str] | None = None) -> list[Judgment]:
        # full_text: an answer that calls tools is judged on its calls, written out as <tool_call> lines.
        messages = self.rubric.messages(
            instruction=fence(instruction, self.max_chars), reference=fence(answer.reference, self.max_chars),
            candidate=fence(answer.full_text, self.max_chars), **(extra or {}),
        )
        outcomes = await self._samples(messages, PointwiseVerdict)
        out = []
        for repeat, got in enumerate(outcomes):
            base = self._base(answer, repeat)
            if isinstance(got, PointwiseVerdict):
                out.append(Judgment(**base, ok=True, scores={"similarity": got.similarity, "precision": got.precision},
                                    reasons={"similarity": got.similarity_reason[:REASON_CHARS],
                                             "precision": got.precision_reason[:REASON_CHARS]}))
            else:
                out.append(Judgment(**base, ok=False, error=got))
        self.on_done(out)
        return out

    async def _pair_one(self, answer: Answer, instruction: str, order: str) -> list[Judgment]:
        cand, ref = fence(answer.full_text, self.max_chars), fence(answer.reference, self.max_chars)
        a, b = (cand, ref) if order == "AB" else (ref, cand)
        messages = self.rubric.messages(instruction=fence(instruction, self.max_chars), answer_a=a, answer_b=b)
        outcomes = await self._samples(messages, PairVerdict)
        out = []
        for repeat, got in enumerate(outcomes):
            base = {**self._base(answer, repeat), "order": order}
            if isinstance(got, PairVerdict):
                outcome = "tie" if got.winner == "tie" else ("win" if (got.winner == "A") == (order == "AB") else "loss")
                out.append(Judgment(**base, ok=True, outcome=outcome, reasons={"pairwise": got.reason[:REASON_CHARS]}))
            else:
                out.append(Judgment(**base, ok=False, error=got))
        self.on_done(out)
        return out

    def _base(self, answer: Answer, repeat: int) -> dict[str, Any]:
        return {"example_id": answer.example_id, "task": answer.task, "sample": answer.sample, "judge": self.index,
                "judge_model": self.model, "repeat": repeat}

    async def _samples(self, messages: list[dict[str, str]], schema: type[BaseModel]) -> list[BaseModel | str]:
        """M parsed verdicts, or for each one that failed for good, the reason (a string)."""
        from llamaduo.service import ServiceError, StructuredOutputError

        m = self.repeats
        got: dict[int, BaseModel | str] = {}
        try:
            # One request with n = M where the provider supports it, so the input is billed once.
            for s, result in enumerate(await self.client.chat_samples(messages, n=m, schema=schema, stage=self.stage)):
                if isinstance(result.parsed, schema):
                    got[s] = result.parsed
        except BudgetExceeded:
            raise
        except StructuredOutputError:
            pass  # some sample did not parse: the good ones are cached, the bad ones are asked again below
        except ServiceError as exc:
            return [str(exc)] * m
        for s in range(m):
            if s in got:
                continue
            reason = "no reply"
            for attempt in range(self.retries + 1):
                try:
                    # Sample index s + attempt*M: a distinct cache key (and seed), so a retry is a fresh reply.
                    parsed = (await self.client.chat(messages, schema=schema, sample=s + attempt * m, stage=self.stage)).parsed
                    if isinstance(parsed, schema):
                        got[s] = parsed
                        break
                    reason = "the reply was not parsed into the rubric's fields"
                except BudgetExceeded:
                    raise
                except StructuredOutputError as exc:
                    reason = str(exc)
                except ServiceError as exc:
                    reason = str(exc)
                    break
            else:
                got[s] = f"{reason} (after {self.retries + 1} attempts)"
            if s not in got:
                got[s] = reason
        return [got[s] for s in range(m)]


def pair_verdict(judgments: list[Judgment]) -> tuple[Outcome | None, bool | None]:
    """One answer's pairwise result from both orders: (outcome, flipped). Disagreeing orders count as a tie."""
    per_order: dict[str, Outcome] = {}
    for order in ("AB", "BA"):
        votes = Counter(j.outcome for j in judgments if j.order == order and j.ok and j.outcome)
        if votes:
            top = votes.most_common()
            per_order[order] = top[0][0] if len(top) == 1 or top[0][1] > top[1][1] else "tie"
    if not per_order:
        return None, None
    if len(per_order) == 1:
        return next(iter(per_order.values())), None
    if per_order["AB"] == per_order["BA"]:
        return per_order["AB"], False
    return "tie", True
