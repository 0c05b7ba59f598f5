"""The LLM client: cache, limits, retries, budget and the attempt log, once, around any backend.

``request`` looks the payload up in the cache first; on a miss it waits for the rate limiters
and the adaptive concurrency limiter, sends, and retries retryable failures with exponential
backoff and jitter, honouring Retry-After. A 429 is retried for as long as it takes (it is never
a reason to drop a slot); other failures count against ``max_retries``. A valid envelope is
cached raw before anything parses its content.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datamill.llm.backends.base import Backend
from datamill.llm.cache import ResponseCache, request_key
from datamill.llm.limits import AdaptiveLimiter
from datamill.llm.runlimits import RunLimits
from datamill.llm.telemetry import AttemptLog, cost_usd
from datamill.llm.types import BackendError, ChatResponse, parse_completion
from datamill.recipe.model import ModelSpec

# judge(response) -> (status, error, repairs): how the caller reads the content, for the log.
Judge = Callable[[ChatResponse], tuple[str, str | None, list[str]]]

BACKOFF_BASE_S = 0.2
BACKOFF_MAX_S = 20.0


class LLMFailed(Exception):
    """A request that failed for good; ``kind`` is the attempt log's error type."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Outcome:
    response: ChatResponse
    cached: bool
    attempts: int


class LLMClient:
    def __init__(
        self,
        backend: Backend,
        spec: ModelSpec,
        cache: ResponseCache | None,
        log: AttemptLog | None,
        limits: RunLimits | None = None,
        secret: str | None = None,
        slot: int = 0,
        ledger: Path | None = None,
    ) -> None:
        self.backend = backend
        self.spec = spec
        self.cache = cache
        self.log = log
        # The embedded model answers one request at a time: queueing more only hides latency.
        self.limiter = AdaptiveLimiter(1 if backend.name == "embedded" else spec.concurrency)
        self.model = spec.model or backend.identity.split(":", 1)[1]
        self._price = (spec.price_prompt_per_1k, spec.price_completion_per_1k)
        # Concurrency, rpm, tpm and budgets for the run as a whole (every worker process).
        self.run_limits = (limits or RunLimits(slot + 1, shared=False)).model(slot, spec, ledger, self.cost)
        self._secret = secret or None
        self.requests_sent = 0

    def cost(self, prompt_tokens: float, completion_tokens: float) -> float:
        return cost_usd(self.model, int(prompt_tokens), int(completion_tokens), self._price)

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _redact_bytes(self, body: bytes) -> bytes:
        # A server may echo the key back, even in a 200: it never reaches the cache or a record.
        return body.replace(self._secret.encode(), b"***") if self._secret else body

    def _log(self, **fields: Any) -> None:
        if self.log is not None:
            self.log.write(backend=self.backend.name, model=self.model, **fields)

    def log_step_down(self, slot: int, column: str, used: str, now: str, error: str) -> None:
        """One line when a server refuses a response_format and the run steps down a rung for good."""
        self._log(
            slot=slot, column=column, attempt=0, status="step_down", http_status=None, error=error,
            latency_ms=0.0, prompt_tokens=0, completion_tokens=0, pack=1, repairs=[], cost_usd=0.0,
            step_down={"from": used, "to": now},
        )  # fmt: skip

    async def request(
        self,
        payload: dict[str, Any],
        *,
        slot: int,
        column: str,
        judge: Judge,
        pack: int = 1,
        extra: dict[str, Any] | None = None,
    ) -> Outcome:
        """One logical request: from the cache, or sent with retries until it succeeds or fails for good."""
        extra = extra or {}
        key = request_key(self.backend.identity, payload)
        raw = self.cache.get(key) if self.cache is not None else None
        if raw is not None:
            resp = parse_completion(raw)
            status, error, repairs = judge(resp)
            self._log(
                slot=slot, column=column, attempt=1, status="cached", http_status=None, error=error, latency_ms=0.0,
                prompt_tokens=resp.prompt_tokens, completion_tokens=resp.completion_tokens, pack=pack,
                repairs=repairs, cost_usd=0.0, **extra,
            )  # fmt: skip
            return Outcome(resp, True, 0)
        attempt = 0
        counted = 0
        limits = self.run_limits
        while True:
            attempt += 1
            if self.spec.rpm:
                await limits.take_rpm()
            if self.spec.tpm:
                await limits.take_tpm(float(payload.get("max_tokens") or 0) + _estimate_tokens(payload))
            await self.limiter.acquire(priority=slot)  # earlier slots first
            await limits.acquire()
            try:
                # Reserved once a slot is free: only requests about to be sent hold budget.
                reservation = limits.reserve(payload)  # BudgetExceeded: not sent, the run stops
            except BaseException:
                limits.release()
                await self.limiter.release()
                raise
            t0 = time.perf_counter()
            try:
                self.requests_sent += 1
                body = self._redact_bytes(await self.backend.complete(payload))
                resp = parse_completion(body)
            except BaseException as exc:
                if not isinstance(exc, BackendError):
                    # Cancelled, or a bug: free the slots, keep the reservation (it may have been
                    # answered), and let it propagate.
                    limits.release()
                    await self.limiter.release()
                    limits.settle(reservation, None, None)
                    raise
                latency = (time.perf_counter() - t0) * 1000
                limits.release()
                await self.limiter.release()
                # A refusal costs nothing; a timeout, a dropped connection or an unreadable body
                # may have been answered and billed: it keeps its reservation.
                unknown = exc.kind in ("timeout", "connection", "invalid_response")
                limits.settle(reservation, None if unknown else 0.0, None if unknown else 0.0)
                if exc.kind in ("rate_limited", "overloaded"):
                    self.limiter.on_overload()
                final = not exc.retryable or (exc.kind != "rate_limited" and counted >= self.spec.max_retries)
                # A refused response_format is always followed by the next format down.
                logged = "retry" if (not final or exc.kind == "unsupported_response_format") else "failed"
                self._log(
                    slot=slot, column=column, attempt=attempt, status=logged,
                    http_status=exc.http_status, error=exc.kind, latency_ms=round(latency, 2), prompt_tokens=0,
                    completion_tokens=0, pack=pack, repairs=[], cost_usd=0.0, **extra,
                )  # fmt: skip
                if final:
                    raise LLMFailed(exc.kind, self._redact(str(exc))) from None
                if exc.kind != "rate_limited":
                    counted += 1
                await asyncio.sleep(_backoff(attempt, exc.retry_after))
                continue
            latency = (time.perf_counter() - t0) * 1000
            # Cached before the place is given up: a kill can cost at most the requests in flight.
            if self.cache is not None:
                self.cache.put(key, body)
            limits.release()
            await self.limiter.release()
            self.limiter.on_success()
            cost = self.cost(resp.prompt_tokens, resp.completion_tokens)
            limits.settle(reservation, cost, resp.prompt_tokens + resp.completion_tokens)
            status, error, repairs = judge(resp)
            self._log(
                slot=slot, column=column, attempt=attempt, status=status, http_status=200, error=error,
                latency_ms=round(latency, 2), prompt_tokens=resp.prompt_tokens,
                completion_tokens=resp.completion_tokens, pack=pack, repairs=repairs, cost_usd=round(cost, 8), **extra,
            )  # fmt: skip
            return Outcome(resp, False, attempt)


def _backoff(attempt: int, retry_after: float | None) -> float:
    """Exponential backoff with full jitter; a server's Retry-After is a floor."""
    delay = random.uniform(0, min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 1)))
    return max(delay, retry_after or 0.0)


def _estimate_tokens(payload: dict[str, Any]) -> float:
    return sum(len(m.get("content") or "") for m in payload.get("messages", [])) / 4.0
