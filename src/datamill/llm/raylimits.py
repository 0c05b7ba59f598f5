"""Run-wide limits on a Ray cluster: one coordinator actor, the same interface as :mod:`runlimits`.

The driver creates one :class:`Coordinator` per invocation (a named actor on the driver's node);
every Ray task talks to it through :class:`RayRunLimits`, which has the methods
:class:`~datamill.llm.runlimits.RunLimits` and :class:`~datamill.llm.runlimits.ModelLimits` offer
the LLM client. Inside the actor the counters *are* a ``RunLimits`` (in-process) and its
``ModelLimits``: budgets, reservations, ``logs/spend.jsonl`` and rates run the very code the local
executor runs, written by one process. Only concurrency is the actor's own: places are granted
under an ``asyncio.Condition`` (no polling) and recorded per holder (a task's attempt), so the
driver frees the places of a task that died with requests in flight, and counts its open
reservations as spent, as a resume counts them.

Per request a task makes one awaited call (``acquire``); ``release`` and ``settle`` are sent
without waiting (flushed when the range ends); ``reserve`` waits only for budgeted models.
The actor also sums the tasks' progress, so the driver's bar moves inside ranges.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from datamill.llm.runlimits import (
    FIELDS,
    IN_FLIGHT,
    RESERVED_COST,
    RESERVED_TOKENS,
    SPENT_COST,
    SPENT_TOKENS,
    ModelLimits,
    Reservation,
    RunLimits,
    model_key,
)

FLUSH_PROGRESS_S = 0.2


class Coordinator:
    """The actor's body (wrapped by ``ray.remote`` where Ray is imported)."""

    def __init__(self, specs: dict[int, Any], ledger: str | None, slots: dict[str, int]) -> None:
        self.limits = RunLimits(len(slots) or 1, shared=False)
        path = Path(ledger) if ledger else None
        if path is not None:
            self.limits.load_ledger(path, slots)
        self.models = {i: ModelLimits(self.limits, i, spec, path, None) for i, spec in specs.items()}
        self.in_flight: dict[int, int] = defaultdict(int)
        self.held: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.open: dict[str, tuple[str, int, Reservation]] = {}  # reservation id -> (holder, model, it)
        self.cond: asyncio.Condition | None = None
        self.progress_sum = [0, 0]
        self.max_in_flight = 0

    def ready(self) -> bool:
        return True

    def _cond(self) -> asyncio.Condition:
        if self.cond is None:
            self.cond = asyncio.Condition()
        return self.cond

    def _set_in_flight(self, index: int) -> None:
        self.limits._a[index * FIELDS + IN_FLIGHT] = float(self.in_flight[index])

    async def acquire(self, index: int, holder: str) -> None:
        limit = self.models[index].spec.concurrency
        cond = self._cond()
        async with cond:
            await cond.wait_for(lambda: self.in_flight[index] < limit)
            self.in_flight[index] += 1
            self.held[holder][index] += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight[index])
            self._set_in_flight(index)

    async def release(self, index: int, holder: str) -> None:
        cond = self._cond()
        async with cond:
            if self.held[holder][index] > 0:  # a forgotten holder's late release is not counted twice
                self.held[holder][index] -= 1
                self.in_flight[index] -= 1
                self._set_in_flight(index)
            cond.notify_all()

    async def take_rpm(self, index: int) -> None:
        await self.models[index].take_rpm()

    async def take_tpm(self, index: int, n: float) -> None:
        await self.models[index].take_tpm(n)

    def reserve(self, index: int, tokens: float, cost: float, holder: str) -> Reservation:
        res = self.models[index].reserve_bounds(tokens, cost)
        self.open[res.id] = (holder, index, res)
        return res

    def settle(self, index: int, res: Reservation | None, cost: float | None, tokens: float | None) -> None:
        if res is not None and self.open.pop(res.id, None) is None:
            return  # its holder was forgotten: already counted as spent
        self.models[index].settle(res, cost, tokens)

    async def forget(self, holder: str) -> int:
        """A task died: free its places; its open reservations stay spent (they may have been
        answered), as the next invocation's ledger reading would count them. Returns places freed."""
        freed = 0
        cond = self._cond()
        async with cond:
            for index, n in self.held.pop(holder, {}).items():
                self.in_flight[index] -= n
                freed += n
                self._set_in_flight(index)
            cond.notify_all()
        for rid, (h, index, res) in list(self.open.items()):
            if h != holder:
                continue
            del self.open[rid]
            b = index * FIELDS
            a = self.limits._a
            a[b + RESERVED_COST] -= res.cost
            a[b + RESERVED_TOKENS] -= res.tokens
            a[b + SPENT_COST] += res.cost
            a[b + SPENT_TOKENS] += res.tokens
            key = self.models[index].key
            self.limits.unsettled[key] = self.limits.unsettled.get(key, 0.0) + res.cost
        return freed

    def totals(self, index: int) -> dict[str, float]:
        return self.limits.totals(index)

    def unsettled(self) -> dict[str, float]:
        return dict(self.limits.unsettled)

    def progress(self, slots: int, records: int) -> None:
        self.progress_sum[0] += slots
        self.progress_sum[1] += records

    def progress_total(self) -> list[int]:
        return list(self.progress_sum)

    def stats(self) -> dict[str, Any]:
        return {"max_in_flight": self.max_in_flight, "in_flight": dict(self.in_flight)}


def unwrap(exc: BaseException) -> BaseException:
    """The exception a Ray task or actor raised, without Ray's wrapper (its message is ours)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


class RayRunLimits:
    """The run-wide limits as a Ray task (or the driver) sees them: calls to the coordinator."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self.holder = ""  # the task attempt whose requests hold places (set per range)
        self._later: list[Any] = []
        self._progress = [0, 0]
        self._progress_at = 0.0

    def __reduce__(self) -> tuple[Any, ...]:
        return (RayRunLimits, (self.actor,))

    def _get(self, ref: Any) -> Any:
        import ray

        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            raise unwrap(exc) from None

    def later(self, ref: Any) -> None:
        """A call sent without waiting; :meth:`flush` waits for them all."""
        self._later.append(ref)

    def flush(self) -> None:
        if self._progress != [0, 0]:
            self._later.append(self.actor.progress.remote(*self._progress))
            self._progress = [0, 0]
        refs, self._later = self._later, []
        if refs:
            self._get(refs)

    def report(self, slots: int, records: int) -> None:
        """Progress inside a range, sent to the coordinator at most every FLUSH_PROGRESS_S."""
        self._progress[0] += slots
        self._progress[1] += records
        now = time.monotonic()
        if now - self._progress_at >= FLUSH_PROGRESS_S:
            self._progress_at = now
            self._later.append(self.actor.progress.remote(*self._progress))
            self._progress = [0, 0]

    @property
    def unsettled(self) -> dict[str, float]:
        return dict(self._get(self.actor.unsettled.remote()))

    def totals(self, index: int) -> dict[str, float]:
        return dict(self._get(self.actor.totals.remote(index)))

    def model(self, index: int, spec: Any, ledger: Path | None, price: Any) -> RayModelLimits:
        return RayModelLimits(self, index, spec, price)


class RayModelLimits:
    """One model block's view of the coordinator: the methods the LLM client calls."""

    def __init__(self, owner: RayRunLimits, index: int, spec: Any, price: Any) -> None:
        self._o = owner
        self._actor = owner.actor
        self.index = index
        self.spec = spec
        self.key = model_key(spec)
        self._price = price
        self.budgeted = any(x is not None for x in (spec.max_cost_usd, spec.max_tokens, spec.max_requests))

    def bound(self, payload: dict[str, Any]) -> tuple[float, float]:
        return ModelLimits.bound(self, payload)  # type: ignore[arg-type]  # uses only _price

    def totals(self) -> dict[str, float]:
        return self._o.totals(self.index)

    def reserve(self, payload: dict[str, Any]) -> Reservation | None:
        if not self.budgeted:
            return None
        tokens, cost = self.bound(payload)
        res: Reservation = self._o._get(self._actor.reserve.remote(self.index, tokens, cost, self._o.holder))
        return res

    def settle(self, res: Reservation | None, cost: float | None, tokens: float | None) -> None:
        self._o.later(self._actor.settle.remote(self.index, res, cost, tokens))

    async def acquire(self) -> None:
        await self._actor.acquire.remote(self.index, self._o.holder)

    def release(self) -> None:
        self._o.later(self._actor.release.remote(self.index, self._o.holder))

    async def take_rpm(self) -> None:
        if self.spec.rpm:
            await self._actor.take_rpm.remote(self.index)

    async def take_tpm(self, n: float) -> None:
        if self.spec.tpm:
            await self._actor.take_tpm.remote(self.index, n)
