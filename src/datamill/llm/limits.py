"""Concurrency and rate limits: adaptive (AIMD) concurrency under a ceiling, token buckets."""

from __future__ import annotations

import asyncio
import time


class AdaptiveLimiter:
    """At most ``limit`` requests in flight; ``limit`` grows by ~1 per window of successes and
    halves on a 429 or overload, never above ``ceiling`` nor below 1."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.limit = float(ceiling)
        self.in_flight = 0
        self.max_in_flight = 0
        self._waiters: asyncio.Condition | None = None

    def _cond(self) -> asyncio.Condition:
        if self._waiters is None:
            self._waiters = asyncio.Condition()
        return self._waiters

    async def acquire(self) -> None:
        if self.in_flight < int(self.limit):
            self.in_flight += 1
        else:
            cond = self._cond()
            async with cond:
                await cond.wait_for(lambda: self.in_flight < int(self.limit))
                self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight

    async def release(self) -> None:
        self.in_flight -= 1
        if self._waiters is not None:
            async with self._waiters:
                self._waiters.notify()

    def on_success(self) -> None:
        if self.limit < self.ceiling:
            self.limit = min(self.ceiling, self.limit + 1.0 / self.limit)

    def on_overload(self) -> None:
        self.limit = max(1.0, self.limit / 2)


class TokenBucket:
    """``per_minute`` units per minute, bursting to one second's worth (at least one unit)."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    async def take(self, n: float = 1.0) -> None:
        n = min(n, self.capacity)
        while True:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= n:
                self.tokens -= n
                return
            await asyncio.sleep((n - self.tokens) / self.rate)
