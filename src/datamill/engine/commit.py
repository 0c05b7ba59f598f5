"""Commit and resume, shared by every executor.

``run_range`` turns one slot range into one committed part: records stream into a temporary
file, which is fsynced and renamed into place after its meta file; the directory is fsynced after
each rename. ``pending_ranges`` answers "what is left": the shard's ranges that have no committed
part. Executors decide only where ``run_range`` runs.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from datamill.engine.plan import Plan, SlotRange
from datamill.engine.slots import SlotOutcome, SlotRunner
from datamill.store import atomic
from datamill.store.formats import dumps_line, suffix
from datamill.store.integrity import HASH_FIELD, PartWriter, lines_of, part_writer, read_part
from datamill.store.rundir import Part, RunDir, part_stem


@dataclass
class PartResult:
    """What one committed part holds."""

    start: int
    end: int
    records: int = 0
    slots_done: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    seconds: float = 0.0
    content_hash: str = ""

    def meta(self) -> dict[str, Any]:
        """The part's meta; its size and hashes are filled in when the part is published."""
        return {
            "range": [self.start, self.end],
            "records": self.records,
            "slots_done": self.slots_done,
            "slots_failed": self.failed,
            "dropped": self.dropped,
            "bytes": self.bytes,
            HASH_FIELD: self.content_hash,
            "seconds": round(self.seconds, 3),
        }

    def published(self, writer: PartWriter, meta_path: Path) -> PartResult:
        """Publish ``writer``'s part with this meta; the size and hash it records are kept here too."""
        sealed = writer.publish(meta_path, self.meta())
        self.bytes, self.content_hash = sealed["bytes"], sealed[HASH_FIELD]
        return self

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> PartResult:
        start, end = meta["range"]
        return cls(
            start,
            end,
            records=meta["records"],
            slots_done=meta["slots_done"],
            failed=list(meta["slots_failed"]),
            dropped=dict(meta["dropped"]),
            bytes=meta.get("bytes", 0),
            seconds=meta.get("seconds", 0.0),
        )


def pending_ranges(plan: Plan, run_dir: RunDir, num_shards: int = 1, shard_index: int = 0) -> list[SlotRange]:
    """The shard's ranges with no committed part, in slot order."""
    done = {(p.start, p.end) for p in run_dir.parts()}
    return [r for r in plan.ranges(num_shards, shard_index) if (r.start, r.end) not in done]


def remove_stale_temps(run_dir: RunDir, ranges: Iterable[SlotRange]) -> int:
    """Delete temporary files of ``ranges`` left by killed writers (the caller holds the shard)."""
    wanted = {part_stem(r.start, r.end) for r in ranges}
    n = 0
    if not run_dir.parts_dir.is_dir():
        return 0
    for entry in os.scandir(run_dir.parts_dir):
        name = entry.name
        if name.startswith(".") and atomic.TMP_MARK in name and name[1:].split(".", 1)[0] in wanted:
            os.unlink(entry.path)
            n += 1
    return n


def run_range(
    runner: SlotRunner,
    run_dir: RunDir,
    rng: SlotRange,
    on_slots: Callable[[int, int], None] | None = None,
) -> PartResult:
    """Run the slots of ``rng`` and commit them as one part; returns the part's stats.

    ``on_slots(slots, records)`` is called after each batch, for progress.
    """
    step = runner.batch_slots
    batches = (runner.run(range(lo, min(rng.end, lo + step))) for lo in range(rng.start, rng.end, step))
    return commit_part(runner, run_dir, rng, batches, on_slots, time.perf_counter())


def commit_part(
    runner: SlotRunner,
    run_dir: RunDir,
    rng: SlotRange,
    batches: Iterable[list[SlotOutcome]],
    on_slots: Callable[[int, int], None] | None,
    t0: float,
) -> PartResult:
    """Write the outcomes of ``rng`` (batches in slot order, streamed) as one committed part."""
    out = runner.recipe.output
    stem = part_stem(rng.start, rng.end)
    final = run_dir.parts_dir / (stem + suffix(out.format, out.compression))
    result = PartResult(rng.start, rng.end)
    dropped: Counter[str] = Counter()
    with part_writer(final, out.format, out.compression) as writer:
        for outcomes in batches:
            n_rec = 0
            for outcome in outcomes:
                if outcome.failed is not None:
                    result.failed.append({"slot": outcome.slot, "reason": outcome.failed})
                    continue
                result.slots_done += 1
                if outcome.dropped is not None:
                    dropped[outcome.dropped] += 1
                for rec in outcome.records:
                    writer.write(dumps_line(rec), rec)
                n_rec += len(outcome.records)
            result.records += n_rec
            if on_slots is not None:
                on_slots(len(outcomes), n_rec)
        result.dropped = dict(sorted(dropped.items()))
        result.seconds = time.perf_counter() - t0
        return result.published(writer, final.with_name(stem + ".meta.json"))


async def arun_range(runner: SlotRunner, run_dir: RunDir, rng: SlotRange) -> PartResult:
    """:func:`run_range` on the runner's event loop: the slots' requests are awaited, the part is
    written and committed in a thread, so requests of other ranges keep flowing meanwhile."""
    t0 = time.perf_counter()
    step = runner.batch_slots
    batches = [await runner.arun(range(lo, min(rng.end, lo + step))) for lo in range(rng.start, rng.end, step)]
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, commit_part, runner, run_dir, rng, batches, None, t0)


def quiet_gc() -> tuple[int, int, int]:
    """Fewer, cheaper garbage collections while requests are in flight; returns the old thresholds.

    A full collection of a large heap stalls the event loop for ~0.1 s with every reply waiting:
    objects built so far (the compiled recipe, clients) leave the collector's view, and young
    collections run less often."""
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(threshold[0], 20_000), max(threshold[1], 50), max(threshold[2], 1000))
    return threshold


def stream_ranges(
    runner: SlotRunner,
    run_dir: RunDir,
    ranges: Sequence[SlotRange],
    on_slots: Callable[[int, int], None] | None = None,
    window: int = 2,
) -> Iterator[PartResult]:
    """Run ``ranges`` with up to ``window`` in flight on the runner's loop; yield each part as it commits.

    A part commits when its own slots are done, while the next range's requests are already in
    flight: no drain at part boundaries. Without LLM columns (no loop) ranges run one by one.
    """
    loop = runner.loop
    if loop is None:
        for r in ranges:
            yield run_range(runner, run_dir, r, on_slots)
        return
    todo = list(ranges)
    todo.reverse()
    active: set[asyncio.Task[PartResult]] = set()
    # Restored when the ranges are done (a worker process keeps it: it only runs ranges).
    threshold = quiet_gc()
    try:
        while todo or active:
            while todo and len(active) < window:
                active.add(loop.create_task(arun_range(runner, run_dir, todo.pop())))
            done, _ = loop.run_until_complete(asyncio.wait(active, return_when=asyncio.FIRST_COMPLETED))
            for task in done:
                exc = task.exception()
                if exc is not None:  # a budget stop, bad input: the other ranges are cancelled below
                    raise exc
            for task in sorted(done, key=lambda t: t.result().start):
                active.discard(task)
                res = task.result()
                if on_slots is not None:
                    on_slots(res.end - res.start, res.records)
                yield res
    finally:
        for task in active:
            task.cancel()
        if active:
            loop.run_until_complete(asyncio.gather(*active, return_exceptions=True))
        gc.set_threshold(*threshold)
        gc.unfreeze()


def committed_results(run_dir: RunDir, bounds: SlotRange | None = None) -> list[PartResult]:
    """Stats of the committed parts (within ``bounds`` when given), in slot order."""
    out = []
    for part in run_dir.parts():
        if bounds is not None and (part.end <= bounds.start or part.start >= bounds.end):
            continue
        out.append(PartResult.from_meta(part.meta()))
    return out


__all__ = [
    "PartResult",
    "commit_part",
    "committed_results",
    "pending_ranges",
    "quiet_gc",
    "remove_stale_temps",
    "retry_failed",
    "run_range",
    "stream_ranges",
]


def retry_failed(runner: SlotRunner, run_dir: RunDir, part: Part) -> PartResult | None:
    """Run again the slots that ended ``failed`` in a committed part and rewrite it atomically.

    Records of every other slot are kept byte for byte (LLM answers they used stay in the cache,
    so nothing that succeeded is asked again); the retried slots' records take their place in slot
    order; a slot that fails again stays failed with its new reason. Returns the new stats, or None
    when the part has no failed slot.
    """
    data, meta = read_part(part)
    failed = sorted(int(f["slot"]) for f in meta["slots_failed"])
    if not failed:
        return None
    t0 = time.perf_counter()
    fmt = "parquet" if part.path.name.endswith(".parquet") else "jsonl"
    compression = "zstd" if part.path.name.endswith(".zst") else "none"
    kept: dict[int, list[bytes]] = {}
    ids = runner.sample_ids(part.start, part.end)
    for line in lines_of(part, data, meta):
        slot = runner.slot_of(orjson.loads(line)["sample_id"], ids)
        kept.setdefault(slot, []).append(line)
    outcomes = {o.slot: o for o in runner.run(failed)}
    result = PartResult(part.start, part.end, slots_done=meta["slots_done"], dropped=dict(meta["dropped"]))
    with part_writer(part.path, fmt, compression) as writer:
        for slot in range(part.start, part.end):
            lines = kept.get(slot)
            if lines is None and slot in outcomes:
                o = outcomes[slot]
                if o.failed is not None:
                    result.failed.append({"slot": slot, "reason": o.failed})
                    continue
                result.slots_done += 1
                if o.dropped is not None:
                    result.dropped[o.dropped] = result.dropped.get(o.dropped, 0) + 1
                lines = [dumps_line(rec) for rec in o.records]
            for line in lines or []:
                writer.write(line, orjson.loads(line) if fmt == "parquet" else {})
        result.records = writer.records
        result.dropped = dict(sorted(result.dropped.items()))
        result.seconds = meta.get("seconds", 0.0) + time.perf_counter() - t0
        # The meta is published before the data: a kill between the two leaves a part whose hash no
        # longer matches its meta, which every reader refuses and `datamill fsck --repair` heals.
        result.published(writer, part.meta_path)
    return result
