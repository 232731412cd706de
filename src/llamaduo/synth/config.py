"""Config of synthetic data generation and its quality gates."""

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
    """Hard cap on generator requests for one synth round."""
    seed: int = 0
    """Seed of the seed-example sampler."""
    templates: dict[str, str] = Field(default_factory=dict)
    """Per-task Jinja template overrides: task name -> path of a .j2 file."""
    near_dup_threshold: float = Field(0.8, gt=0, le=1)
    """MinHash Jaccard similarity above which two pairs are near duplicates."""
    ngram: int = Field(13, ge=1)
    """n of the n-gram overlap used to decontaminate against the test split."""
    embed_threshold: float | None = Field(None, gt=0, le=1)
    """Also drop pairs whose embedding cosine to any test item is above this (none: off)."""
    min_quality: float | None = Field(None, ge=0, le=100)
    """Ask the judge to rate each pair and drop those below this (none: off)."""
