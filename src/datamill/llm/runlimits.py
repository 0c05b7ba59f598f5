"""Limits that hold for the run as a whole (issues 12 and 22): concurrency, rpm, tpm, and hard
budgets (cost, tokens, requests), one state per model block, shared by every worker process.

The state lives in one ``multiprocessing`` array created before the pool forks (or a plain list
for a run in one process): an executor backs the same interface with shared memory locally, and
a distributed executor can back it with one coordinator.

Budgets are **reserved before a request is sent** — prompt tokens bounded from the rendered
messages (a token covers at least one byte, plus a per-message allowance for the chat template),
completion bounded by ``max_tokens`` — and **settled** when it returns. A request whose
reservation would pass a budget is not sent: :class:`BudgetExceeded` stops the run cleanly.
Reservations are written ahead to ``logs/spend.jsonl`` and settlements after, so a run killed
with requests in flight counts them at their reservation on the next invocation: the budget
holds across every invocation of one run dir, whatever was killed when.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import multiprocessing as mp
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from datamill.llm.types import BudgetExceeded

FIELDS = 11
SPENT_COST, RESERVED_COST, SPENT_TOKENS, RESERVED_TOKENS, REQUESTS, IN_FLIGHT, RPM, RPM_AT, TPM, TPM_AT, LEDGER_AT = (
    range(FIELDS)
)
MESSAGE_ALLOWANCE = 8  # chat-template tokens per message, an upper bound for common templates
POLL_S = 0.002


class RunLimits:
    """``n`` model blocks' counters: shared across forked processes, or local to this one."""

    def __init__(self, n: int, shared: bool = True) -> None:
        self.n = max(1, n)
        self.unsettled: dict[str, float] = {}  # model -> USD of reservations a kill left open
        self.invocation = uuid.uuid4().hex[:12]  # tags this invocation's ledger lines
        if shared:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            # A raw array and a lock of our own: reads that need no lock never wait for one (a
            # synchronized array locks on every item, and a terminated worker may hold the lock).
            self._a: Any = ctx.RawArray("d", self.n * FIELDS)
            self._lock: Any = ctx.RLock()
        else:
            self._a = [0.0] * (self.n * FIELDS)
            self._lock = threading.Lock()

    def totals(self, index: int) -> dict[str, float]:
        b = index * FIELDS
        # A worker terminated by its pool while holding the lock leaves it held for good: the
        # parent's report after the pool is gone reads without it rather than wait forever.
        locked = self._lock.acquire(timeout=1.0)
        try:
            return {
                "spent_usd": float(self._a[b + SPENT_COST]),
                "reserved_usd": float(self._a[b + RESERVED_COST]),
                "spent_tokens": float(self._a[b + SPENT_TOKENS]),
                "reserved_tokens": float(self._a[b + RESERVED_TOKENS]),
                "requests": float(self._a[b + REQUESTS]),
                "in_flight": float(self._a[b + IN_FLIGHT]),
            }
        finally:
            if locked:
                self._lock.release()

    def model(self, index: int, spec: Any, ledger: Path | None, price: Any) -> ModelLimits:
        return ModelLimits(self, index, spec, ledger, price)

    def load_ledger(self, path: Path, slots: dict[str, int]) -> None:
        """Spend recorded by earlier invocations: settled amounts, and unsettled reservations at
        their reserved amount (their requests may have been answered before a kill)."""
        if not path.is_file():
            return
        open_res: dict[str, tuple[str, float, float]] = {}
        data = path.read_bytes()
        data = data[: data.rfind(b"\n") + 1]  # a line still being written is read by the next sync
        with self._lock:
            for index in slots.values():
                self._a[index * FIELDS + LEDGER_AT] = float(len(data))
            for raw in data.splitlines():
                try:
                    ev = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue  # a line cut by a kill: its reservation line, if any, still counts
                slot = slots.get(ev.get("model", ""))
                if slot is None:
                    continue
                base = slot * FIELDS
                if "reserve" in ev:
                    open_res[ev["reserve"]] = (ev["model"], float(ev["cost"]), float(ev["tokens"]))
                    self._a[base + REQUESTS] += 1
                elif "settle" in ev and ev["settle"] in open_res:
                    del open_res[ev["settle"]]
                    self._a[base + SPENT_COST] += float(ev["cost"])
                    self._a[base + SPENT_TOKENS] += float(ev["tokens"])
            # Unsettled: answered or not before a kill, nobody knows; counted as spent in full.
            for model, cost, tokens in open_res.values():
                base = slots[model] * FIELDS
                self._a[base + SPENT_COST] += cost
                self._a[base + SPENT_TOKENS] += tokens
                self.unsettled[model] = self.unsettled.get(model, 0.0) + cost


@dataclass
class Reservation:
    id: str
    cost: float
    tokens: float


class ModelLimits:
    """One model block's view of the run-wide limits."""

    def __init__(self, limits: RunLimits, index: int, spec: Any, ledger: Path | None, price: Any) -> None:
        self._l = limits
        self._base = index * FIELDS
        self.spec = spec
        self.key = model_key(spec)
        self._ledger = ledger
        self._price = price  # (prompt_tokens, completion_tokens) -> USD
        self.budgeted = any(x is not None for x in (spec.max_cost_usd, spec.max_tokens, spec.max_requests))

    def totals(self) -> dict[str, float]:
        return self._l.totals(self._base // FIELDS)

    # -- budgets --------------------------------------------------------------------------------

    def bound(self, payload: dict[str, Any]) -> tuple[float, float]:
        """Upper bounds of a request's tokens and cost, known before it is sent."""
        messages = payload.get("messages", [])
        prompt = sum(len(str(m.get("content") or "").encode()) + MESSAGE_ALLOWANCE for m in messages)
        completion = int(payload.get("max_tokens") or 0)
        return float(prompt + completion), float(self._price(prompt, completion))

    def reserve(self, payload: dict[str, Any]) -> Reservation | None:
        """Reserve the request's bounds against every budget, or raise BudgetExceeded (nothing sent)."""
        if not self.budgeted:
            return None
        return self.reserve_bounds(*self.bound(payload))

    def reserve_bounds(self, tokens: float, cost: float) -> Reservation:
        """:meth:`reserve` of bounds already computed (by a process that holds no counters)."""
        spec, a, b = self.spec, self._l._a, self._base
        with self._ledger_lock(), self._l._lock:
            self._sync()
            if spec.max_requests is not None and a[b + REQUESTS] + 1 > spec.max_requests:
                raise BudgetExceeded(
                    f"request budget spent: {int(a[b + REQUESTS]):,} of max_requests {spec.max_requests:,}"
                )
            if spec.max_tokens is not None and a[b + SPENT_TOKENS] + a[b + RESERVED_TOKENS] + tokens > spec.max_tokens:
                raise BudgetExceeded(
                    f"token budget spent: {int(a[b + SPENT_TOKENS]):,} used, {int(a[b + RESERVED_TOKENS]):,} reserved, "
                    f"the next request needs up to {int(tokens):,} of max_tokens {spec.max_tokens:,}"
                )
            if spec.max_cost_usd is not None and a[b + SPENT_COST] + a[b + RESERVED_COST] + cost > spec.max_cost_usd:
                raise BudgetExceeded(
                    f"cost budget spent: ${a[b + SPENT_COST]:.4f} used, ${a[b + RESERVED_COST]:.4f} reserved, "
                    f"the next request needs up to ${cost:.4f} of max_cost_usd ${spec.max_cost_usd}"
                )
            a[b + REQUESTS] += 1
            a[b + RESERVED_TOKENS] += tokens
            a[b + RESERVED_COST] += cost
            res = Reservation(uuid.uuid4().hex[:16], cost, tokens)
            self._write({"model": self.key, "inv": self._l.invocation, "reserve": res.id, "cost": cost,
                         "tokens": tokens})  # fmt: skip
        return res

    def settle(self, res: Reservation | None, cost: float | None, tokens: float | None) -> None:
        """Replace a reservation by what the request used (None: unknown, keep the reservation).

        Without a budget there is no reservation: what the request used is only counted (for
        progress displays), never written to the ledger."""
        if res is None:
            a, b = self._l._a, self._base
            with self._l._lock:
                a[b + REQUESTS] += 1
                a[b + SPENT_COST] += cost or 0.0
                a[b + SPENT_TOKENS] += tokens or 0.0
            return
        cost = res.cost if cost is None else cost
        tokens = res.tokens if tokens is None else tokens
        a, b = self._l._a, self._base
        with self._ledger_lock(), self._l._lock:
            self._sync()
            a[b + RESERVED_COST] -= res.cost
            a[b + RESERVED_TOKENS] -= res.tokens
            a[b + SPENT_COST] += cost
            a[b + SPENT_TOKENS] += tokens
            self._write({"model": self.key, "inv": self._l.invocation, "settle": res.id, "cost": cost,
                         "tokens": tokens, "res_cost": res.cost, "res_tokens": res.tokens})  # fmt: skip

    @contextlib.contextmanager
    def _ledger_lock(self) -> Iterator[None]:
        """The ledger's file lock: every invocation on this run dir (shards run at the same time
        into one dir) checks and records reservations one at a time."""
        if self._ledger is None:
            yield
            return
        fd = os.open(self._ledger, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _sync(self) -> None:
        """Apply what other invocations appended to the ledger since this invocation last looked
        (its own lines are already counted). Called holding both locks."""
        if self._ledger is None:
            return
        a, b = self._l._a, self._base
        start = int(a[b + LEDGER_AT])
        try:
            with open(self._ledger, "rb") as f:
                f.seek(start)
                data = f.read()
        except FileNotFoundError:
            return
        data = data[: data.rfind(b"\n") + 1]
        a[b + LEDGER_AT] = float(start + len(data))
        for raw in data.splitlines():
            try:
                ev = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if ev.get("inv") == self._l.invocation or ev.get("model") != self.key:
                continue
            if "reserve" in ev:
                a[b + REQUESTS] += 1
                a[b + RESERVED_COST] += float(ev["cost"])
                a[b + RESERVED_TOKENS] += float(ev["tokens"])
            elif "settle" in ev and "res_cost" in ev:
                a[b + RESERVED_COST] -= float(ev["res_cost"])
                a[b + RESERVED_TOKENS] -= float(ev["res_tokens"])
                a[b + SPENT_COST] += float(ev["cost"])
                a[b + SPENT_TOKENS] += float(ev["tokens"])

    def _write(self, event: dict[str, Any]) -> None:
        if self._ledger is None:
            return
        line = orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
        fd = os.open(self._ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write: lines of concurrent processes never interleave
        finally:
            os.close(fd)

    # -- concurrency and rates ------------------------------------------------------------------

    async def acquire(self) -> None:
        """A run-wide slot among ``concurrency`` requests in flight."""
        a, b = self._l._a, self._base
        while True:
            with self._l._lock:
                if a[b + IN_FLIGHT] < self.spec.concurrency:
                    a[b + IN_FLIGHT] += 1
                    return
            await asyncio.sleep(POLL_S)

    def release(self) -> None:
        with self._l._lock:
            self._l._a[self._base + IN_FLIGHT] -= 1

    async def take_rpm(self) -> None:
        if self.spec.rpm:
            await self._take(RPM, RPM_AT, float(self.spec.rpm), 1.0)

    async def take_tpm(self, n: float) -> None:
        if self.spec.tpm:
            await self._take(TPM, TPM_AT, float(self.spec.tpm), n)

    async def _take(self, field: int, stamp: int, per_minute: float, n: float) -> None:
        """A token bucket shared by every process: ``per_minute``, bursting to one second's worth."""
        rate = per_minute / 60.0
        capacity = max(1.0, rate)
        need = min(n, capacity)  # a request larger than the burst waits for a full bucket ...
        a, b = self._l._a, self._base
        while True:
            now = time.monotonic()
            with self._l._lock:
                if a[b + stamp] == 0.0:
                    a[b + field], a[b + stamp] = capacity, now
                tokens = min(capacity, a[b + field] + (now - a[b + stamp]) * rate)
                a[b + stamp] = now
                if tokens >= need:
                    a[b + field] = tokens - n  # ... and then takes all it needs: the bucket goes into debt
                    return
                a[b + field] = tokens
            await asyncio.sleep(max(POLL_S, (need - tokens) / rate))


def model_key(spec: Any) -> str:
    """The model a limit belongs to: backend and model name. Not the server address, which is
    operational (a run may resume against another address of the same model, and its spend with it)."""
    return f"{spec.backend}|{spec.model or ''}"


def budget_report(specs: dict[str, Any], slots: dict[str, int], limits: RunLimits) -> list[dict[str, Any]]:
    """Spent, reserved and remaining of each budgeted model block (``specs``: key -> ModelSpec)."""
    rows = []
    for key, index in slots.items():
        spec = specs[key]
        if all(x is None for x in (spec.max_cost_usd, spec.max_tokens, spec.max_requests)):
            continue
        t = limits.totals(index)
        row: dict[str, Any] = {"model": spec.model or spec.backend, **{k: round(v, 6) for k, v in t.items()}}
        row["unsettled_usd"] = round(limits.unsettled.get(key, 0.0), 6)
        for cap, used in (("max_cost_usd", "spent_usd"), ("max_tokens", "spent_tokens"), ("max_requests", "requests")):
            limit = getattr(spec, cap)
            row[cap] = limit
            reserved = (
                t["reserved_usd"] if cap == "max_cost_usd" else t["reserved_tokens"] if cap == "max_tokens" else 0
            )
            row[f"remaining_{cap.removeprefix('max_')}"] = (
                None if limit is None else round(limit - t[used] - reserved, 6)
            )
        rows.append(row)
    return rows
