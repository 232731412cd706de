"""Config of synthetic data generation and its quality gates (dedup and decontamination settings live in `data`)."""

from __future__ import annotations

from pydantic import Field

from llamaduo.configbase import Section


class SynthConfig(Section):
    """How the generator writes new pairs, and which gates they must pass."""

    seeds_per_call: int = Field(4, ge=1)
    """Train examples shown to the generator in one request (k)."""
    pairs_per_call: int = Field(5, ge=1)
    """Pairs requested per call (m)."""
    max_calls: int | None = Field(None, ge=1)
    """Hard cap on generator requests for one synth run (none: 4 x the calls N pairs need, at least 10)."""
    concurrency: int = Field(8, ge=1)
    """Generator requests in flight at once (the service layer's own limits still apply)."""
    seed: int = 0
    """Seed of the seed-example sampler."""
    tasks: list[str] = Field(default_factory=list)
    """Tasks to synthesise for (none: every task in the train split); N is shared evenly between them."""
    templates: dict[str, str] = Field(default_factory=dict)
    """Per-task Jinja template overrides: task name -> path of a .j2 file (relative to the project folder)."""
    task_templates: dict[str, str] = Field(default_factory=dict)
    """Which built-in template a task name uses when it is not one of summarization, classification, closed_qa, coding (default: general)."""
    min_chars: int = Field(2, ge=0)
    """Instructions or responses shorter than this are rejected by the schema gate."""
    max_chars: int = Field(8000, ge=1)
    """Pairs longer than this (instruction plus response) are rejected by the length gate."""
    language: str | None = "en"
    """Expected language of instructions; `en` rejects text that is mostly non-Latin script or lacks common English words (none: off)."""
    min_quality: float | None = Field(None, ge=1, le=10)
    """Ask the judge to rate each surviving pair from 1 to 10 and drop those below this (none: off)."""
