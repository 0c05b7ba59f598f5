"""Concurrency and rate limits: adaptive (AIMD) concurrency under a ceiling, token buckets."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time


class AdaptiveLimiter:
    """At most ``limit`` requests in flight; ``limit`` grows by ~1 per window of successes and
    halves on a 429 or overload, never above ``ceiling`` nor below 1.

    Waiters are served lowest ``priority`` first (the slot index), then first come: the earliest
    slots of a run go first, so a range started early (to keep requests flowing across part
    boundaries) fills only the places the range before it leaves free, and never delays it.
    """

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.limit = float(ceiling)
        self.in_flight = 0
        self.max_in_flight = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    async def acquire(self, priority: int = 0) -> None:
        if not self._waiters and self.in_flight < int(self.limit):
            self._take()
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._seq), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted, then cancelled: give the place back
                self.in_flight -= 1
                self._wake()
            raise

    def _take(self) -> None:
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight

    def _wake(self) -> None:
        while self._waiters and self.in_flight < int(self.limit):
            _, _, fut = heapq.heappop(self._waiters)
            if fut.done():  # cancelled while waiting
                continue
            self._take()
            fut.set_result(None)

    async def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def on_success(self) -> None:
        if self.limit < self.ceiling:
            self.limit = min(self.ceiling, self.limit + 1.0 / self.limit)
            self._wake()

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
