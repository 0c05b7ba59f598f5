"""The executor interface: how slot ranges are scheduled, never how parts are committed.

A :class:`RangeJob` is everything a process needs to run ranges of one run: it is small and
picklable, rebuilds the recipe once per process, and calls :func:`datamill.engine.commit.run_range`
(the one commit protocol). An :class:`Executor` maps a job over ranges and yields each
:class:`PartResult` as its part commits, in any order; the merged output does not depend on it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from datamill.columns import RunContext
from datamill.engine.commit import PartResult, run_range, stream_ranges
from datamill.engine.plan import SlotRange
from datamill.engine.slots import SlotRunner
from datamill.recipe import LoadedRecipe, load_text
from datamill.store.rundir import RunDir

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class RangeJob:
    """A picklable description of the work: recipe source, overrides and run dir."""

    recipe_text: str
    recipe_file: str
    base_dir: str
    size: int
    seed: int
    params_json: str
    run_dir: str
    run_id: str = ""
    use_cache: bool = True
    workers: int = 1

    @classmethod
    def for_run(
        cls,
        loaded: LoadedRecipe,
        recipe_text: str,
        run_dir: str,
        run_id: str = "",
        use_cache: bool = True,
        workers: int = 1,
    ) -> RangeJob:
        r = loaded.recipe
        params = orjson.dumps(r.params, option=orjson.OPT_SORT_KEYS).decode()
        return cls(
            recipe_text, loaded.file, str(loaded.base_dir), r.size, r.seed, params, run_dir, run_id, use_cache, workers
        )

    def runner(self) -> SlotRunner:
        runner = _RUNNERS.get(self)
        if runner is None:
            loaded = load_text(self.recipe_text, self.recipe_file, Path(self.base_dir))
            params = orjson.loads(self.params_json)
            ctx = RunContext(
                Path(self.run_dir), self.run_id, self.use_cache, SHARED_LIMITS[0], self.workers, RANGE_JOURNAL[0]
            )
            runner = SlotRunner(loaded.with_overrides(size=self.size, seed=self.seed, params=params), ctx)
            _RUNNERS.clear()
            _RUNNERS[self] = runner
        return runner

    def __call__(self, rng: SlotRange, on_slots: ProgressFn | None = None) -> PartResult:
        return run_range(self.runner(), RunDir(self.run_dir), rng, on_slots)

    def stream(self, ranges: Sequence[SlotRange], on_slots: ProgressFn | None = None) -> Iterator[PartResult]:
        """Run ``ranges`` in this process, the next range's requests in flight while one commits."""
        return stream_ranges(self.runner(), RunDir(self.run_dir), ranges, on_slots)

    def close(self) -> None:
        runner = _RUNNERS.pop(self, None)
        if runner is not None:
            runner.close()


# One compiled recipe per process, reused across the ranges it runs.
_RUNNERS: dict[RangeJob, SlotRunner] = {}
# The run-wide limits (concurrency, rates, budgets), made by execute before the pool forks and
# handed to each worker (datamill.llm.runlimits).
SHARED_LIMITS: list[Any] = [None]
# Where LLM columns cache and log when a process may not write shared files (the Ray executor's
# per-range journals, datamill.llm.journal); None: RUN/cache/llm.sqlite and logs/attempts.jsonl.
RANGE_JOURNAL: list[Any] = [None]


class Executor(ABC):
    """Schedules ranges of a job; commits are the job's business."""

    name = "local"
    workers = 1
    # Tasks write per-range journals (datamill.llm.journal) instead of the shared cache and
    # attempt log, and read llm.sqlite immutable: the run folds them in before and after.
    journals = False

    def make_limits(self, specs: dict[int, Any], slots: dict[str, int], ledger: Path, workers: int) -> Any:
        """The run-wide limits of this invocation, with what earlier invocations spent (``ledger``).

        ``specs``: model index -> model block; ``slots``: model key -> index. Here, counters in
        shared memory for ``workers`` forked processes (a plain list for one)."""
        from datamill.llm.runlimits import RunLimits

        limits = RunLimits(len(slots), shared=workers > 1)
        limits.load_ledger(ledger, slots)
        return limits

    def close(self) -> None:  # noqa: B027 - most executors start nothing that needs stopping
        """Release what the executor started for the run (a Ray instance); called once, at the end."""

    @abstractmethod
    def map(self, job: RangeJob, ranges: Sequence[SlotRange], on_slots: ProgressFn) -> Iterator[PartResult]:
        """Run every range and yield their results as they commit.

        ``on_slots(slots, records)`` reports progress inside ranges; it is called in the
        calling process, possibly from the generator's own thread.
        """
