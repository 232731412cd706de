"""What the generator returns per task kind (a JSON schema of m pairs) and how each pair becomes chat turns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, Field

KINDS = ("summarization", "classification", "closed_qa", "coding", "general", "tool_calling")


class SummarizationPair(BaseModel):
    passage: str
    instruction: str
    summary: str


class ClassificationPair(BaseModel):
    instruction: str
    text: str
    labels: list[str] = Field(min_length=2)
    label: str


class ClosedQAPair(BaseModel):
    context: str
    question: str
    answer: str


class CodingPair(BaseModel):
    instruction: str
    answer: str


class GeneralPair(BaseModel):
    instruction: str
    response: str


class GeneratedCall(BaseModel):
    name: str
    arguments: str
    """The arguments as a JSON object written as text: a free-form object cannot be expressed in a strict schema."""


class ToolCallingPair(BaseModel):
    request: str
    tool_calls: list[GeneratedCall] = Field(default_factory=list)
    """Calls to the offered functions; empty when the right reply is a text answer."""
    response: str = ""


class ToolCallingReply(BaseModel):
    pairs: list[ToolCallingPair]


class SummarizationReply(BaseModel):
    pairs: list[SummarizationPair]


class ClassificationReply(BaseModel):
    pairs: list[ClassificationPair]


class ClosedQAReply(BaseModel):
    pairs: list[ClosedQAPair]


class CodingReply(BaseModel):
    pairs: list[CodingPair]


class GeneralReply(BaseModel):
    pairs: list[GeneralPair]


@dataclass(frozen=True)
class TaskKind:
    """A generator reply schema and the mapping of one of its pairs to (user turn, answer, extra metadata)."""

    name: str
    reply: type[BaseModel]
    to_turns: Callable[[BaseModel], tuple[str, str, dict]]


def _summary(p: SummarizationPair) -> tuple[str, str, dict]:
    return f"{p.instruction.strip()}\n\n{p.passage.strip()}", p.summary, {}


def _classification(p: ClassificationPair) -> tuple[str, str, dict]:
    labels = [label.strip() for label in p.labels]
    return f"{p.instruction.strip()}\n\n{p.text.strip()}\n\nOptions: {', '.join(labels)}", p.label, {"labels": labels}


def _closed_qa(p: ClosedQAPair) -> tuple[str, str, dict]:
    # Question first, then the context: the layout of Dolly's closed QA rows.
    return f"{p.question.strip()}\n\n{p.context.strip()}", p.answer, {}


def _coding(p: CodingPair) -> tuple[str, str, dict]:
    return p.instruction, p.answer, {}


def _general(p: GeneralPair) -> tuple[str, str, dict]:
    return p.instruction, p.response, {}


def _tool_calling(p: ToolCallingPair) -> tuple[str, str, dict]:
    # The calls travel in `extra`: the engine turns them into the assistant turn's tool_calls and checks them.
    return p.request, p.response, {"tool_calls": [c.model_dump() for c in p.tool_calls]}


TASK_KINDS: dict[str, TaskKind] = {
    "summarization": TaskKind("summarization", SummarizationReply, _summary),  # type: ignore[arg-type]
    "classification": TaskKind("classification", ClassificationReply, _classification),  # type: ignore[arg-type]
    "closed_qa": TaskKind("closed_qa", ClosedQAReply, _closed_qa),  # type: ignore[arg-type]
    "coding": TaskKind("coding", CodingReply, _coding),  # type: ignore[arg-type]
    "general": TaskKind("general", GeneralReply, _general),  # type: ignore[arg-type]
    "tool_calling": TaskKind("tool_calling", ToolCallingReply, _tool_calling),  # type: ignore[arg-type]
}
