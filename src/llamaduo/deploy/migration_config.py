"""Config of the production migration loop: live judging of shadow pairs, canary routing, and the promote/rollback policy."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from llamaduo.configbase import Section


class LiveEvalConfig(Section):
    """Judging a share of live pairs (service answer as the reference, local answer as the candidate) in the background."""

    enabled: bool = False
    """Send a share of the pairs the gateway sees to the judges (`service.judge`, with `evaluate`'s rubric, repeats and ensemble)."""
    share: float = Field(0.05, ge=0, le=1)
    """Share of pairs judged, chosen by the capture id (the same pair is chosen on every replica)."""
    daily_budget_usd: float | None = Field(1.0, ge=0)
    """Most USD live judging may spend per UTC day, summed over every replica in the capture store (none: only service.budget_usd caps it). A pair is skipped when its worst-case cost would cross it."""
    concurrency: int = Field(4, ge=1, le=64)
    """Pairs judged at once (each in its own thread and event loop, beside the gateway's)."""
    queue_size: int = Field(256, ge=1)
    """Pairs waiting to be judged; past it new pairs are skipped (and counted), never waited for."""
    reference_in_local: bool = True
    """In canary and local modes, also ask the service (in the background) for the chosen pairs answered locally, so live scores go on being measured; costs one service request per chosen pair."""
    window: int = Field(200, ge=2)
    """The sliding window of `status --live`, /metrics and the report: the last this many judged pairs and requests."""


class CanaryConfig(Section):
    """`canary` mode: a share of requests answered by the local model, the rest by the service."""

    share: float = Field(0.1, ge=0, le=1)
    """Share of requests answered locally."""
    sticky: Literal["none", "client", "conversation"] = "none"
    """none: each request drawn on its own; client: a client's requests all go one way; conversation: the turns of one
    conversation (the `x-llamaduo-conversation` header, else its first system and user turns) all go one way."""


class PolicyConfig(Section):
    """Moving shadow -> canary -> local by itself, and back on low live scores, fallbacks or engine crashes."""

    enabled: bool = False
    """Let the gateway change its mode by itself; every change is an event in the capture store with its evidence."""
    target: dict[str, float] = Field(default_factory=lambda: {"precision.coverage@70": 0.8})
    """What the local model must reach on live pairs, as `metric.stat: value` (stats: mean on 0-100, coverage@T as a 0-1 share)."""
    promote_min_judged: int = Field(50, ge=2)
    """Judged pairs since entering a stage needed to promote from it; every target's 95% CI lower bound must reach its value."""
    rollback_min_judged: int = Field(10, ge=2)
    """Judged pairs since entering a stage needed to roll back for low scores: the last this many are looked at, and a target
    whose 95% CI upper bound is below its value rolls back one step."""
    max_fallback_rate: float = Field(0.05, ge=0, le=1)
    """Largest share of local answer attempts (canary, local) that may fall back to the service; above it, roll back."""
    fallback_min_attempts: int = Field(20, ge=1)
    """Local answer attempts since entering the stage before the fallback rate is judged; the last this many count."""
    max_crashes: int = Field(3, ge=1)
    """Engine crashes (serve's worker process) within `crash_window_s` that roll back one step and block promotion."""
    crash_window_s: float = Field(600.0, gt=0)
    """The window engine crashes are counted in."""
    highest: Literal["canary", "local"] = "local"
    """The furthest stage the policy may promote to."""
    interval_s: float = Field(5.0, gt=0)
    """How often the decision-maker reads new evidence, and every replica reads the current mode."""
    settle_s: float = Field(2.0, ge=0)
    """Evidence younger than this is read at the next turn, so rows still being written are taken in order."""
    lease_s: float = Field(30.0, gt=0)
    """The decision-maker's lease in the capture store; another replica takes over this long after it stops renewing."""

    @field_validator("target")
    @classmethod
    def _keys(cls, value: dict[str, float]) -> dict[str, float]:
        from llamaduo.evaluate.aggregate import parse_target_key

        if not value:
            raise ValueError("the policy needs at least one target, e.g. {precision.coverage@70: 0.8}")
        for key in value:
            parse_target_key(key)
        return value
