"""Pure parts of the service layer: score parsing, retry policy, rate limiting, prices, structured replies."""

from __future__ import annotations

import asyncio
import email.utils
import logging

import pytest
from pydantic import BaseModel

from llamaduo.service import parse_score
from llamaduo.service.config import Limits, Price, ServiceModel
from llamaduo.service.errors import ProviderFailure, ServiceError
from llamaduo.service.limits import RateLimiter
from llamaduo.service.prices import FREE, cost_usd, find_price, price_for
from llamaduo.service.retry import backoff_delay, call_with_retries, kind_of_status, parse_retry_after, retry_delay
from llamaduo.service.structured import as_schema, extract_json, validate
from llamaduo.service.types import Usage


@pytest.mark.parametrize(("value", "expected"), [(85, 85.0), (85.0, 85.0), ("85.5", 85.5), ("85/100", 85.0), (" 85 ", 85.0), ("4/5", 80.0), ("0", 0.0), (100, 100.0)])
def test_parse_score_accepts(value: object, expected: float) -> None:
    assert parse_score(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [(101, "outside the range"), ("-3", "outside the range"), ("abc", "not a number"), ("", "not a number"), (None, "not a number"),
     (True, "not a number"), (float("nan"), "not a finite"), ("6/5", "more than its maximum"), ("3/0", "zero denominator"), ([85], "not a number")],
)
def test_parse_score_rejects_with_reason(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_score(value)


def test_parse_score_custom_range() -> None:
    assert parse_score("4", lo=1, hi=5) == 4.0
    with pytest.raises(ValueError, match="1..5"):
        parse_score(7, lo=1, hi=5)


def test_retry_after_forms() -> None:
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    future = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert parse_retry_after({"retry-after": future}, now=1_000_000.0) == pytest.approx(30.0)
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after": "86400"}) is None  # absurd: fall back to our backoff
    assert parse_retry_after({}) is None


def test_status_kinds_and_backoff() -> None:
    assert [kind_of_status(s) for s in (429, 500, 503, 529, 401, 403, 400, 404)] == ["rate_limit", "server", "server", "server", "auth", "auth", "client", "client"]
    assert [backoff_delay(a, 0.5, 30, 0.0) for a in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff_delay(10, 0.5, 30, 0.0) == 30
    assert backoff_delay(1, 0.5, 30, 1.0) == pytest.approx(0.75)  # jitter shortens by at most 25%
    failure = ProviderFailure("rate_limit", "slow down", status=429, retry_after=45.0)
    assert retry_delay(failure, 0, 0.5, 30, 0.5) == 45.0  # Retry-After wins even past the cap


def test_call_with_retries_counts_and_gives_up() -> None:
    attempts: list[int] = []
    sleeps: list[float] = []

    async def always_503() -> str:
        attempts.append(1)
        raise ProviderFailure("server", "unavailable", status=503)

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)

    with pytest.raises(ServiceError, match="after 4 attempts") as info:
        asyncio.run(call_with_retries(always_503, max_retries=3, base_s=1, max_s=10, sleep=fake_sleep, random01=lambda: 0.0, what="x"))
    assert len(attempts) == 4 and sleeps == [1, 2, 4]
    assert info.value.retryable


def test_rate_limiter_paces_with_fake_clock() -> None:
    now = [0.0]
    waits: list[float] = []

    async def sleep(delay: float) -> None:
        waits.append(delay)
        now[0] += delay

    async def main() -> None:
        limiter = RateLimiter(60, clock=lambda: now[0], sleep=sleep)  # one per second after the burst
        for _ in range(62):
            await limiter.acquire()

    asyncio.run(main())
    assert len(waits) == 2 and sum(waits) == pytest.approx(2.0)


def test_prices_lookup_and_cost(caplog: pytest.LogCaptureFixture) -> None:
    mini = find_price("gpt-4o-mini-2024-07-18")
    assert mini is not None and mini.input == 0.15
    assert find_price("openai/gpt-4o") == find_price("gpt-4o")
    assert find_price("claude-sonnet-4-20250514") is not None
    assert find_price("gpt-4oz") is None  # a family prefix must end at a dash
    override = {"my-model": Price(input=1.0, output=2.0)}
    usage = Usage(input_tokens=1_000_000, cached_input_tokens=500_000, output_tokens=1_000_000)
    assert cost_usd(usage, find_price("my-model", override)) == pytest.approx(3.0)
    assert cost_usd(usage, mini) == pytest.approx(0.075 + 0.0375 + 0.6)
    assert cost_usd(usage, mini, batch=True) == pytest.approx((0.075 + 0.0375 + 0.6) / 2)
    with caplog.at_level(logging.WARNING):
        assert price_for(ServiceModel(model="totally-unknown-model")) is None
        assert price_for(ServiceModel(model="totally-unknown-model")) is None
        assert price_for(ServiceModel(model="my-own-vllm-model", free=True)) == FREE
    warnings = [r.message for r in caplog.records]
    assert sum("totally-unknown-model" in m for m in warnings) == 1
    assert "service.prices.totally-unknown-model" in warnings[0] and "free: true" in warnings[0]
    assert not any("my-own-vllm-model" in m for m in warnings)  # marked free: nothing to warn about


class Verdict(BaseModel):
    score: int
    reason: str


def test_structured_validation() -> None:
    schema = as_schema(Verdict)
    assert validate('```json\n{"score": 3, "reason": "ok"}\n```', schema) == Verdict(score=3, reason="ok")
    assert extract_json('Sure! {"a": 1} hope that helps') == {"a": 1}
    with pytest.raises(ValueError, match="score"):
        validate('{"reason": "no score"}', schema)
    with pytest.raises(ValueError, match="not valid JSON"):
        validate("I think it is good", schema)
    raw = as_schema({"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]})
    assert validate('{"score": 5}', raw) == {"score": 5}
    with pytest.raises(ValueError, match=r"reply.score: 'five' is not of type 'integer'"):
        validate('{"score": "five"}', raw)
    with pytest.raises(ValueError, match="not a valid JSON schema"):
        as_schema({"type": "object", "properties": {"score": {"type": "whole number"}}})


# One schema that uses $ref, items and minimum; each test breaks one of them and nothing else.
SCORES = as_schema({
    "$defs": {"Score": {"type": "object", "properties": {"value": {"type": "integer", "minimum": 0}, "reason": {"type": "string"}},
                        "required": ["value", "reason"], "additionalProperties": False}},
    "type": "object",
    "properties": {"scores": {"type": "array", "items": {"$ref": "#/$defs/Score"}, "minItems": 1}},
    "required": ["scores"],
})


def test_schema_dict_accepts_a_reply_that_follows_it() -> None:
    assert validate('{"scores": [{"value": 3, "reason": "ok"}, {"value": 0, "reason": "none"}]}', SCORES)["scores"][1]["value"] == 0


def test_schema_dict_ref_is_followed() -> None:
    # The referenced definition requires `reason`: a hand-rolled check that ignores $ref would let this pass.
    with pytest.raises(ValueError, match=r"reply.scores\[0\]: 'reason' is a required property"):
        validate('{"scores": [{"value": 3}]}', SCORES)


def test_schema_dict_items_are_each_checked() -> None:
    with pytest.raises(ValueError, match=r"reply.scores\[1\]: 'three' is not of type 'object'"):
        validate('{"scores": [{"value": 3, "reason": "ok"}, "three"]}', SCORES)


def test_schema_dict_minimum_binds() -> None:
    with pytest.raises(ValueError, match=r"reply.scores\[0\].value: -1 is less than the minimum of 0"):
        validate('{"scores": [{"value": -1, "reason": "ok"}]}', SCORES)


def test_schema_dict_additional_properties_bind() -> None:
    with pytest.raises(ValueError, match="Additional properties are not allowed"):
        validate('{"scores": [{"value": 1, "reason": "ok", "extra": true}]}', SCORES)


def test_limits_defaults_are_sane() -> None:
    limits = Limits()
    assert limits.max_retries >= 1 and limits.concurrency >= 1
