"""Running a recipe into a run dir: the one entry point every executor goes through.

``execute`` checks the run dir (same recipe hash or empty), takes the shard's lock, finds the
ranges without a committed part, hands them to an executor and logs what happened. Re-running the
same command resumes; nothing is ever run twice into a committed part.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datamill
from datamill.columns.llm import model_specs, preflight, recipe_model_slots
from datamill.engine.commit import PartResult, committed_results, pending_ranges, remove_stale_temps
from datamill.engine.commit import retry_failed as retry_failed_part
from datamill.engine.executors import Executor, LocalExecutor, RangeJob
from datamill.engine.executors import base as executors_base
from datamill.engine.plan import Plan
from datamill.engine.progress import NullProgress, Progress
from datamill.errors import DataError, InputError, RunDirError, SourceError, UsageError
from datamill.llm.journal import fold_attempts, fold_cache
from datamill.llm.runlimits import budget_report
from datamill.llm.types import BudgetExceeded
from datamill.recipe import LoadedRecipe
from datamill.recipe.check import column_model
from datamill.recipe.model import LLMColumn
from datamill.recipe.trust import touches
from datamill.store.integrity import quick_check
from datamill.store.rundir import PART_INTEGRITY, RunDir, utc_now

# Failed slots listed by name in a summary; the rest are counted (all are in logs/run.jsonl).
FAILED_SHOWN = 5


@dataclass
class RunSummary:
    """The state of one shard of a run after an invocation."""

    recipe: str
    recipe_hash: str
    num_shards: int
    shard_index: int
    slots_total: int
    slots_done: int = 0
    slots_failed: int = 0
    records: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    failed_examples: list[dict[str, Any]] = field(default_factory=list)
    parts_resumed: int = 0
    parts_run: int = 0
    new_slots: int = 0
    new_records: int = 0
    seconds: float = 0.0
    stopped: str = "completed"
    stop_detail: str = ""
    crash_reason: str = ""  # the first slot failed by a native crash of the embedded model
    budget: list[dict[str, Any]] = field(default_factory=list)  # spent, reserved, remaining per model
    retried_slots: int = 0  # failed slots run again by --retry-failed
    executor: str = "local"  # what ran this invocation's ranges: "local" or "ray"
    workers: int = 1

    @property
    def slots_remaining(self) -> int:
        return self.slots_total - self.slots_done - self.slots_failed

    @property
    def exit_code(self) -> int:
        return 1 if self.slots_failed or self.stopped != "completed" else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "recipe_hash": self.recipe_hash,
            "shard": [self.shard_index, self.num_shards],
            "slots_total": self.slots_total,
            "slots_done": self.slots_done,
            "slots_failed": self.slots_failed,
            "slots_remaining": self.slots_remaining,
            "records": self.records,
            "dropped": self.dropped,
            "parts_resumed": self.parts_resumed,
            "parts_run": self.parts_run,
            "seconds": round(self.seconds, 3),
            "stopped": self.stopped,
            "stop_detail": self.stop_detail,
            "budget": self.budget,
            "executor": self.executor,
            "workers": self.workers,
        }


def _retry_failed(job: RangeJob, run_dir: RunDir, bounds: Any, results: list[PartResult], summary: RunSummary) -> None:
    """Rewrite each committed part of the shard that holds failed slots, those slots run again."""
    by_start = {r.start: i for i, r in enumerate(results)}
    try:
        for part in run_dir.parts():
            if part.end <= bounds.start or part.start >= bounds.end:
                continue
            before = results[by_start[part.start]]
            if not before.failed:
                continue
            res = retry_failed_part(job.runner(), run_dir, part)
            if res is None:
                continue
            results[by_start[part.start]] = res
            summary.retried_slots += len(before.failed)
            summary.new_slots += len(before.failed)
            summary.new_records += res.records - before.records
            run_dir.log_event("retry", range=[part.start, part.end], retried=len(before.failed),
                              still_failed=len(res.failed), records=res.records)  # fmt: skip
            for f in res.failed:
                run_dir.log_event("slot_failed", slot=f["slot"], reason=f["reason"])
    finally:
        job.close()


def check_shards(num_shards: int, shard_index: int) -> None:
    if num_shards < 1:
        raise UsageError(f"--num-shards: expected an integer >= 1, got {num_shards}")
    if not 0 <= shard_index < num_shards:
        raise UsageError(f"--shard-index: expected 0 <= index < {num_shards}, got {shard_index}")


def check_source(loaded: LoadedRecipe) -> None:
    """Refuse a source with rows that cannot be read, unless the recipe says to skip them."""
    src, spec = loaded.source, loaded.recipe.source
    if src is None or spec is None or not src.bad or spec.on_bad_row == "skip":
        return
    in_run = [reason for row, reason in src.bad if row < loaded.recipe.size]
    if in_run:
        more = f" ({len(in_run)} bad rows; --on-bad-row skip runs the rest)" if len(in_run) > 1 else ""
        raise SourceError(f"{in_run[0]}{more}")


def manifest_for(loaded: LoadedRecipe, plan: Plan, recipe_text: str) -> dict[str, Any]:
    return {
        "datamill_version": datamill.__version__,
        "recipe_hash": loaded.hash,
        "recipe_name": loaded.recipe.name,
        "recipe_file": loaded.file,
        "recipe": loaded.recipe.model_dump(mode="json"),
        "recipe_text": recipe_text,
        "plan": plan.summary(),
        "part_integrity": PART_INTEGRITY,
        "touches": touches(loaded),
        **({"source": loaded.source.describe()} if loaded.source is not None else {}),
        "created": utc_now(),
    }


def open_run_dir(loaded: LoadedRecipe, out: str | Path) -> RunDir:
    """Check that ``out`` is empty or holds this recipe's run; raise :class:`RunDirError` if not.

    Writes nothing: the layout is created only once every check has passed.
    """
    run_dir = RunDir(out)
    if run_dir.exists():
        theirs = run_dir.manifest().get("recipe_hash")
        if theirs != loaded.hash:
            name = run_dir.manifest().get("recipe_name")
            was = (run_dir.manifest().get("source") or {}).get("content_hash")
            if loaded.source is not None and was and was != loaded.source.content_hash:
                raise RunDirError(
                    f"{out}: the input {loaded.source.display} changed since this run started (content hash "
                    f"{was}, now {loaded.source.content_hash}); a resume over changed input would mix two "
                    "inputs: restore the input, or use another --out"
                )
            raise RunDirError(
                f"{out}: holds a run of recipe {name!r} with hash {theirs}, but this recipe's hash is "
                f"{loaded.hash} (recipe, size or seed differ); use another --out or remove the dir"
            )
    elif run_dir.path.exists():
        if not run_dir.path.is_dir():
            raise RunDirError(f"{out}: exists and is not a directory")
        # A planner recipe's run dir holds its plan (and the planner's cache and log) before the manifest.
        planned = loaded.recipe.planner is not None and (run_dir.path / "planner.json").is_file()
        if any(run_dir.path.iterdir()) and not planned:
            raise RunDirError(f"{out}: exists, is not empty and is not a datamill run dir")
    return run_dir


@contextmanager
def shard_lock(run_dir: RunDir, num_shards: int, shard_index: int) -> Iterator[None]:
    """Hold this shard of the run dir for one process; a second runner is refused, not mixed in."""
    path = run_dir.logs_dir / f"shard-{shard_index}-of-{num_shards}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirError(
                f"{run_dir.path}: shard {shard_index} of {num_shards} is being run by another process"
            ) from None
        yield
    finally:
        os.close(fd)


def summarize(summary: RunSummary, results: list[PartResult]) -> None:
    dropped: Counter[str] = Counter()
    summary.slots_done = summary.slots_failed = summary.records = 0
    summary.failed_examples = []
    for r in results:
        summary.slots_done += r.slots_done
        summary.slots_failed += len(r.failed)
        summary.records += r.records
        dropped.update(r.dropped)
        if not summary.crash_reason:
            summary.crash_reason = next((f["reason"] for f in r.failed if "model_crashed" in f["reason"]), "")
        room = FAILED_SHOWN - len(summary.failed_examples)
        if room > 0:
            summary.failed_examples.extend(r.failed[:room])
    summary.dropped = dict(sorted(dropped.items()))


def execute(
    loaded: LoadedRecipe,
    recipe_text: str,
    out: str | Path,
    num_shards: int = 1,
    shard_index: int = 0,
    executor: Executor | None = None,
    progress: Progress | None = None,
    use_cache: bool = True,
    retry_failed: bool = False,
) -> RunSummary:
    """Run (or resume) one shard of ``loaded`` into ``out`` and return its summary; with
    ``retry_failed``, first run again the slots that ended failed in committed parts."""
    check_shards(num_shards, shard_index)
    check_source(loaded)
    for col in loaded.recipe.columns.values():
        if isinstance(col, LLMColumn):
            preflight(column_model(loaded.recipe, col))
    plan = Plan(loaded.recipe, loaded.tables)
    executor = executor or LocalExecutor(1)
    progress = progress or NullProgress()
    run_dir = open_run_dir(loaded, out)
    fresh = not run_dir.path.exists()
    run_dir.create(manifest_for(loaded, plan, recipe_text))
    try:
        return _execute(
            loaded, recipe_text, run_dir, plan, num_shards, shard_index, executor, progress, use_cache, retry_failed
        )
    except InputError:
        # Bad input found only once slots ran (a template the sandbox refused at render time):
        # a run dir this invocation made holds nothing of value and is removed, as if never written.
        if fresh and not any(run_dir.parts_dir.glob("*.meta.json")):
            shutil.rmtree(run_dir.path, ignore_errors=True)
        raise


def _execute(
    loaded: LoadedRecipe,
    recipe_text: str,
    run_dir: RunDir,
    plan: Plan,
    num_shards: int,
    shard_index: int,
    executor: Executor,
    progress: Progress,
    use_cache: bool,
    retry_failed: bool = False,
) -> RunSummary:
    bounds = plan.shard_bounds(num_shards, shard_index)
    summary = RunSummary(loaded.recipe.name, loaded.hash, num_shards, shard_index, slots_total=len(bounds))
    t0 = time.perf_counter()
    with shard_lock(run_dir, num_shards, shard_index):
        # A damaged committed part would be taken as done: refuse, and say how to heal it.
        damaged = [r for p in run_dir.parts() if p.start < bounds.end and p.end > bounds.start
                   and (r := quick_check(p)) is not None]  # fmt: skip
        if damaged:
            more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
            raise DataError(f"{damaged[0]}{more}")
        pending = pending_ranges(plan, run_dir, num_shards, shard_index)
        remove_stale_temps(run_dir, pending)
        # Responses and attempt lines a killed Ray run left in per-range journals: into the shared
        # cache and log before anything reads them (no task of this run dir runs now).
        fold_attempts(run_dir.path)
        fold_cache(run_dir.path, checkpoint=executor.journals)
        results = committed_results(run_dir, bounds)
        summary.parts_resumed = len(results)
        summarize(summary, results)
        run_dir.log_event(
            "start",
            pid=os.getpid(),
            shard=[shard_index, num_shards],
            recipe_hash=loaded.hash,
            slots=len(bounds),
            bounds=[bounds.start, bounds.end],
            pending_ranges=len(pending),
            pending_slots=sum(len(r) for r in pending),
            executor=executor.name,
        )
        progress.start(len(bounds), summary.slots_done + summary.slots_failed, summary.records)
        run_id = uuid.uuid4().hex[:12]
        workers = min(executor.workers, max(1, len(pending)))
        summary.executor, summary.workers = executor.name, workers
        job = RangeJob.for_run(
            loaded, recipe_text, str(run_dir.path), run_id=run_id, use_cache=use_cache, workers=workers
        )
        # One set of limits for every worker of this run, with what earlier invocations spent.
        slots = recipe_model_slots(loaded.recipe)
        specs = model_specs(loaded.recipe)
        by_index = {i: specs[key] for key, i in slots.items()}
        limits = executor.make_limits(by_index, slots, run_dir.logs_dir / "spend.jsonl", workers)
        executors_base.SHARED_LIMITS[0] = limits
        try:
            if retry_failed:
                _retry_failed(job, run_dir, bounds, results, summary)
            failed = summary.slots_failed
            for res in executor.map(job, pending, progress.advance):
                results.append(res)
                failed += len(res.failed)
                spent = [limits.totals(i) for i in slots.values()]
                progress.note(failed, int(sum(t["requests"] for t in spent)), sum(t["spent_tokens"] for t in spent),
                              sum(t["spent_usd"] for t in spent))  # fmt: skip
                summary.parts_run += 1
                summary.new_slots += res.slots_done + len(res.failed)
                summary.new_records += res.records
                run_dir.log_event(
                    "part",
                    shard=[shard_index, num_shards],
                    range=[res.start, res.end],
                    records=res.records,
                    slots_done=res.slots_done,
                    slots_failed=len(res.failed),
                    dropped=res.dropped,
                )
                for f in res.failed:
                    run_dir.log_event("slot_failed", slot=f["slot"], reason=f["reason"])
        except KeyboardInterrupt:
            summary.stopped = "interrupted"
            raise
        except BudgetExceeded as exc:
            # The part in flight is not committed; its responses are cached, so a resume is cheap.
            summary.stopped = "budget"
            summary.stop_detail = str(exc)
        finally:
            executors_base.SHARED_LIMITS[0] = None
            progress.finish()
            summary.budget = budget_report(specs, slots, limits)
            executor.close()
            if executor.journals:
                fold_cache(run_dir.path, checkpoint=False)
            summary.seconds = time.perf_counter() - t0
            results.sort(key=lambda r: r.start)
            summarize(summary, results)
            if summary.stopped == "completed" and summary.slots_remaining:
                summary.stopped = "incomplete"
            run_dir.log_event("stop", reason=summary.stopped, **summary.as_dict())
    return summary
