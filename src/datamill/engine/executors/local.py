"""The local executor: a process pool on this machine (or this process, for one worker)."""

from __future__ import annotations

import multiprocessing as mp
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from datamill.engine.commit import PartResult, quiet_gc
from datamill.engine.executors import base
from datamill.engine.executors.base import Executor, ProgressFn, RangeJob
from datamill.engine.plan import SlotRange
from datamill.forked import die_with_parent

_worker_job: RangeJob | None = None
_worker_counter: Any = None


def _init_worker(job: RangeJob, counter: Any, limits: Any) -> None:
    global _worker_job, _worker_counter
    die_with_parent()
    # The parent owns Ctrl-C and SIGTERM: it stops the pool, and workers just end (no tracebacks).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
    _worker_job, _worker_counter = job, counter
    base.SHARED_LIMITS[0] = limits
    if job.runner().loop is not None:  # compile once, before the first range
        quiet_gc()


def _report(slots: int, records: int) -> None:
    with _worker_counter.get_lock():
        _worker_counter[0] += slots
        _worker_counter[1] += records


def _run(rng: SlotRange) -> PartResult:
    assert _worker_job is not None
    return _worker_job(rng, _report)


class LocalExecutor(Executor):
    """Runs ranges in ``workers`` processes; with one worker, in the calling process."""

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers

    def map(self, job: RangeJob, ranges: Sequence[SlotRange], on_slots: ProgressFn) -> Iterator[PartResult]:
        if self.workers == 1 or len(ranges) <= 1:
            sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
            try:
                yield from job.stream(ranges, on_slots)
            finally:
                job.close()
            return
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        counter = ctx.Array("q", 2)
        seen = [0, 0]

        def poll() -> None:
            with counter.get_lock():
                now = [counter[0], counter[1]]
            if now != seen:
                on_slots(now[0] - seen[0], now[1] - seen[1])
                seen[:] = now

        pool = ctx.Pool(
            min(self.workers, len(ranges)), initializer=_init_worker, initargs=(job, counter, base.SHARED_LIMITS[0])
        )
        try:
            results = pool.imap_unordered(_run, ranges, chunksize=1)
            remaining = len(ranges)
            while remaining:
                try:
                    res = results.next(timeout=0.25)
                except mp.TimeoutError:
                    poll()
                    continue
                remaining -= 1
                poll()
                yield res
            pool.close()
        finally:
            pool.terminate()
            pool.join()
