"""Concurrency, requests-per-minute and tokens-per-minute limits, shared by every client of one provider+model.

Clock and sleep are injectable so tests check the pacing without waiting.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from llamaduo.service.config import Limits

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class RateLimiter:
    """A token bucket holding up to one minute's allowance, refilled continuously.

    A full bucket at start lets a stage burst up to its per-minute limit, as providers allow.
    """

    def __init__(self, per_minute: int, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep):
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.available = self.capacity
        self.clock = clock
        self.sleep = sleep
        self.updated = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self.available = min(self.capacity, self.available + (now - self.updated) * self.rate)
        self.updated = now

    async def acquire(self, amount: float = 1.0) -> float:
        """Take `amount` (clamped to the capacity, so one huge request still goes); returns seconds waited."""
        amount = min(float(amount), self.capacity)
        waited = 0.0
        # The lock keeps waiters in order: the first in line is served first.
        async with self._lock:
            self._refill()
            while self.available < amount:
                delay = (amount - self.available) / self.rate
                await self.sleep(delay)
                waited += delay
                self._refill()
            self.available -= amount
        return waited

    def refund(self, amount: float) -> None:
        """Give back an over-estimate (e.g. the reply used fewer tokens than reserved)."""
        self.available = min(self.capacity, self.available + max(0.0, amount))


@dataclass
class Gate:
    """All limits of one provider+model."""

    semaphore: asyncio.Semaphore
    rpm: RateLimiter | None = None
    tpm: RateLimiter | None = None
    limits: Limits = field(default_factory=Limits)


_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str, str], Gate]] = weakref.WeakKeyDictionary()


def gate_for(provider: str, model: str, base_url: str | None, limits: Limits, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> Gate:
    """The shared gate of a provider+model in the running event loop (the first caller's limits apply)."""
    loop = asyncio.get_running_loop()
    gates = _GATES.setdefault(loop, {})
    key = (provider, model, base_url or "")
    gate = gates.get(key)
    if gate is None:
        gate = Gate(
            semaphore=asyncio.Semaphore(limits.concurrency),
            rpm=RateLimiter(limits.rpm, clock=clock, sleep=sleep) if limits.rpm else None,
            tpm=RateLimiter(limits.tpm, clock=clock, sleep=sleep) if limits.tpm else None,
            limits=limits,
        )
        gates[key] = gate
    return gate
