"""The Ray executor: the same ranges, the same commit protocol, the same run dir, on a cluster.

Each pending range is one Ray task that calls :func:`datamill.engine.commit.run_range` through the
:class:`RangeJob`, exactly as a local worker does, so output does not depend on the executor and a
run moves freely between ``--executor local`` and ``--executor ray`` (the run dir must be on a
filesystem every node mounts at the same path). At most ``workers`` tasks run at a time.

Failures: a task that raises (bad input, a budget spent, a bug) stops the run as it would locally.
A task whose worker process or node dies is run again, its range only, up to ``max_attempts``
times (logged as ``range_retry`` events); after that the range's slots are committed as failed
with the reason, so the run ends (exit 1) and ``--retry-failed`` can run them later. Nothing is
retried forever.

LLM columns: run-wide limits live in one coordinator actor (:mod:`datamill.llm.raylimits`) and
responses and attempt lines go to per-range journals (:mod:`datamill.llm.journal`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from datamill.engine.commit import PartResult, commit_part, quiet_gc, remove_stale_temps
from datamill.engine.executors import base
from datamill.engine.executors.base import Executor, ProgressFn, RangeJob
from datamill.engine.plan import SlotRange
from datamill.engine.slots import SlotOutcome
from datamill.errors import UsageError
from datamill.store.rundir import RunDir, part_stem

MAX_ATTEMPTS = 3
POLL_S = 0.25
# A local instance started for one run: small, quiet, no dashboard.
LOCAL_OBJECT_STORE = 128 * 1024 * 1024


def import_ray() -> Any:
    """Ray, or a UsageError that says which extra to install."""
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray: pip install 'datamill[ray]'") from None
    return ray


# -- inside a Ray worker process -----------------------------------------------------------------

_WORKER: dict[str, Any] = {"job": None}


def _prepare(job: RangeJob, coordinator: Any, llm: bool) -> Any:
    """Set this worker process up for ``job`` once (it may have served another run before)."""
    from datamill.llm.raylimits import RayRunLimits

    if _WORKER["job"] != job:
        old = _WORKER["job"]
        if old is not None:
            old.close()
            if base.RANGE_JOURNAL[0] is not None:
                base.RANGE_JOURNAL[0].close()
        sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
        limits = RayRunLimits(coordinator)
        base.SHARED_LIMITS[0] = limits
        if llm:
            from datamill.llm.journal import RangeJournal

            base.RANGE_JOURNAL[0] = RangeJournal(job.run_dir, job.run_id)
        else:
            base.RANGE_JOURNAL[0] = None
        _WORKER.update(job=job, limits=limits)
        if job.runner().loop is not None:  # compile once, before the first range
            quiet_gc()
        else:
            # A Ray worker's heap holds Ray itself: the collector would walk it at every full
            # collection. What exists now (Ray, the compiled recipe) leaves its view.
            gc.freeze()
    return _WORKER["limits"]


def run_task(job: RangeJob, rng: SlotRange, coordinator: Any, token: str, llm: bool) -> PartResult:
    """One range in a Ray worker: the job's own ``run_range``, progress sent to the coordinator."""
    limits = _prepare(job, coordinator, llm)
    run_dir = RunDir(job.run_dir)
    stem = part_stem(rng.start, rng.end)
    meta = run_dir.parts_dir / f"{stem}.meta.json"
    data = [run_dir.parts_dir / f"{stem}{ext}" for ext in (".jsonl", ".jsonl.zst", ".parquet")]
    if meta.is_file() and any(p.is_file() for p in data):
        # An earlier attempt committed and died before it could say so: the part stands.
        import orjson

        return PartResult.from_meta(orjson.loads(meta.read_bytes()))
    limits.holder = token
    journal = base.RANGE_JOURNAL[0]
    if journal is not None:
        journal.begin(stem, token)
    try:
        return job(rng, limits.report)
    finally:
        if journal is not None:
            journal.end()
        limits.flush()


# -- the driver ----------------------------------------------------------------------------------


class RayExecutor(Executor):
    """Runs each range as a Ray task, at most ``workers`` at a time.

    ``address``: a running cluster (``ray start --head`` on the head node), or None to start a
    local instance for the run and stop it after. ``workers``: tasks at a time (default: the
    cluster's CPUs).
    """

    name = "ray"
    journals = True

    def __init__(
        self, workers: int | None = None, address: str | None = None, max_attempts: int = MAX_ATTEMPTS
    ) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.ray = import_ray()
        self.address = address
        self.max_attempts = max_attempts
        self._owns = False
        self._coordinator: Any = None
        self._start(workers)
        if workers is None:
            workers = max(1, int(self.ray.cluster_resources().get("CPU", 1)))
        self.workers = workers

    def _start(self, workers: int | None) -> None:
        ray = self.ray
        if ray.is_initialized():
            return  # a session the caller started (a notebook, a test): used as it is
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
        try:
            if self.address:
                # A cluster started with token authentication (Ray's default) is joined with the
                # token `ray start` saved; Ray reads it only when the mode says so.
                token = Path.home() / ".ray" / "auth_token"
                if "RAY_AUTH_MODE" not in os.environ and (token.is_file() or os.environ.get("RAY_AUTH_TOKEN")):
                    os.environ["RAY_AUTH_MODE"] = "token"
                ray.init(address=self.address, **quiet)
            else:
                ray.init(
                    address="local",
                    num_cpus=workers or os.cpu_count() or 1,
                    include_dashboard=False,
                    object_store_memory=LOCAL_OBJECT_STORE,
                    **quiet,
                )
                self._owns = True
        except ConnectionError as exc:
            raise UsageError(f"--address {self.address}: no Ray cluster answers there ({exc})") from None

    def make_limits(self, specs: dict[int, Any], slots: dict[str, int], ledger: Path, workers: int) -> Any:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from datamill.llm.raylimits import Coordinator, RayRunLimits

        ray = self.ray
        here = ray.get_runtime_context().get_node_id()
        # On the driver's node: the ledger is written from the host that holds the shard lock.
        actor_cls = ray.remote(num_cpus=0, max_concurrency=10_000)(Coordinator)
        self._coordinator = actor_cls.options(
            name=f"datamill-limits-{uuid.uuid4().hex[:12]}",
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
        ).remote(specs, str(ledger), slots)
        ray.get(self._coordinator.ready.remote())
        return RayRunLimits(self._coordinator)

    def map(self, job: RangeJob, ranges: Sequence[SlotRange], on_slots: ProgressFn) -> Iterator[PartResult]:
        from datamill.llm.journal import fold_attempts
        from datamill.llm.raylimits import unwrap

        ray = self.ray
        if self._coordinator is None:
            self.make_limits({}, {}, Path(job.run_dir) / "logs" / "spend.jsonl", self.workers)
        coord = self._coordinator
        llm = bool(job.runner().loop is not None)
        job.close()  # the driver compiled the recipe only to ask; the tasks run it
        task = ray.remote(num_cpus=1, max_retries=0)(run_task)
        job_ref = ray.put(job)
        run_dir = RunDir(job.run_dir)
        todo = deque((r, 1) for r in ranges)
        running: dict[Any, tuple[SlotRange, int, str]] = {}
        seen = [0, 0]

        def poll() -> None:
            now = ray.get(coord.progress_total.remote())
            if now != seen:
                on_slots(now[0] - seen[0], now[1] - seen[1])
                seen[:] = now

        finished = False
        try:
            while todo or running:
                while todo and len(running) < self.workers:
                    rng, attempt = todo.popleft()
                    token = f"{attempt}-{uuid.uuid4().hex[:8]}"
                    running[task.remote(job_ref, rng, coord, token, llm)] = (rng, attempt, token)
                ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
                poll()
                for ref in ready:
                    rng, attempt, token = running.pop(ref)
                    try:
                        res = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        raise unwrap(exc) from None  # the task's own error: as a local run raises it
                    except ray.exceptions.RayError as exc:
                        res = self._lost(job, run_dir, rng, attempt, token, exc, todo)
                        if res is None:
                            continue
                    if llm:
                        fold_attempts(run_dir.path, part_stem(rng.start, rng.end))
                    yield res
            poll()
            finished = True
        finally:
            for ref in running:
                ray.cancel(ref, force=True)
            if running:
                ray.wait(list(running), num_returns=len(running), timeout=30)
            if finished:
                remove_stale_temps(run_dir, ranges)  # temp files of killed attempts

    def _lost(
        self,
        job: RangeJob,
        run_dir: RunDir,
        rng: SlotRange,
        attempt: int,
        token: str,
        exc: BaseException,
        todo: deque[tuple[SlotRange, int]],
    ) -> PartResult | None:
        """A task whose process or node died: run its range again, or fail its slots for good."""
        self.ray.get(self._coordinator.forget.remote(token))
        why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'worker lost'}"
        if attempt < self.max_attempts:
            run_dir.log_event("range_retry", range=[rng.start, rng.end], attempt=attempt + 1, reason=why[:300])
            todo.appendleft((rng, attempt + 1))
            return None
        reason = f"worker_lost: range [{rng.start}, {rng.end}) lost its worker {attempt} times; last: {why[:300]}"
        runner = job.runner()
        try:
            outcomes = [SlotOutcome(slot, failed=reason) for slot in range(rng.start, rng.end)]
            return commit_part(runner, run_dir, rng, [outcomes], None, time.perf_counter())
        finally:
            job.close()

    def close(self) -> None:
        if self._coordinator is not None:
            # The cluster may be gone already (a lost head): nothing to free then.
            with contextlib.suppress(Exception):
                self.ray.kill(self._coordinator)
            self._coordinator = None
        if self._owns:
            self.ray.shutdown()
            self._owns = False
