"""`llamaduo config check`: one tiny structured request per service role, before a run pays for hundreds.

It finds what otherwise fails minutes into a loop: a missing key, a wrong base_url or model id, a server that
rejects JSON schemas. The probe skips the cache (a cached answer proves nothing) and is billed like any call.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel

from llamaduo.errors import LlamaduoError
from llamaduo.service.client import model_for_role, open_service

PROBE = [{"role": "user", "content": 'Health check. Reply with the JSON object {"ok": true} and nothing else.'}]


class Probe(BaseModel):
    ok: bool


class RoleCheck(BaseModel):
    """How one role answered the probe."""

    role: str
    provider: str
    model: str
    base_url: str | None = None
    ok: bool
    latency_s: float | None = None
    cost_usd: float = 0.0
    problem: str | None = None
    fix: str | None = None


def roles_of(config: Any) -> list[tuple[str, int, str]]:
    """(role, index, label) of every configured service model: the generator, then each judge."""
    return [("generator", 0, "generator")] + [("judge", i, f"judge.{i}") for i in range(len(config.service.judge))]


async def check_service(config: Any, *, run: Any = None) -> list[RoleCheck]:
    """Probe every role, one after the other (so one failure does not hide the others); never raises LlamaduoError."""
    fresh = config.model_copy(update={"service": config.service.model_copy(update={"cache": False})})
    checks = []
    for role, index, label in roles_of(config):
        model = model_for_role(config, role, index)
        record = {"role": label, "provider": model.provider, "model": model.model, "base_url": model.base_url}
        started = time.perf_counter()
        try:
            async with open_service(fresh, role, index, run=run) as client:
                # Enough room for the JSON even on models that think aloud first; far below a real request.
                result = await client.chat(PROBE, params={"max_tokens": 64, "temperature": 0.0}, schema=Probe, stage="check")
        except LlamaduoError as exc:
            checks.append(RoleCheck(**record, ok=False, problem=exc.problem, fix=exc.fix))
            continue
        checks.append(RoleCheck(**record, ok=True, latency_s=time.perf_counter() - started, cost_usd=result.cost_usd))
    return checks
