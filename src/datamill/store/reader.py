"""The public reader of run dirs: records in slot order, merged across shards, checked.

Quality tools and users read datasets through here, never through the engine.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from datamill.errors import DataError, InputError
from datamill.seeds import parse_sample_id
from datamill.store import atomic
from datamill.store.formats import iter_lines
from datamill.store.integrity import PartDamaged, lines_of, part_lines, quick_check, read_part
from datamill.store.rundir import Part, RunDir


def complete_parts(rd: RunDir, allow_partial: bool = False, what: str = "read") -> list[Part]:
    """Committed parts of ``rd`` in slot order; refuses slots with no part unless ``allow_partial``."""
    manifest = rd.manifest()  # refuses a dir that is not a run dir
    parts = rd.parts()
    for part in parts:  # meta and size of all parts first (a stat each): no output before a known damage
        reason = quick_check(part)
        if reason is not None:
            raise PartDamaged(reason)
    if not allow_partial:
        gaps = expected_gaps(rd, parts)
        if gaps:
            raise DataError(f"{what}: {rd.path}: {describe_gaps(gaps, int(manifest['plan']['slots']))}")
    return parts


def expected_slots(rd: RunDir) -> list[tuple[int, int]]:
    """The slot ranges this run dir is meant to hold: the shards run into it (from their start
    events), or the whole plan for a dir with no record of its shards."""
    spans = sorted({tuple(ev["bounds"]) for ev in rd.events() if ev.get("event") == "start" and "bounds" in ev})
    if not spans:
        return [(0, int(rd.manifest()["plan"]["slots"]))]
    merged: list[list[int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [(lo, hi) for lo, hi in merged]


def expected_gaps(rd: RunDir, parts: Sequence[Part]) -> list[tuple[int, int]]:
    """Slots of :func:`expected_slots` with no committed part among ``parts``."""
    gaps = []
    for lo, hi in expected_slots(rd):
        inside = [p for p in parts if p.start < hi and p.end > lo]
        gaps += [(max(a, lo), min(b, hi)) for a, b in missing_ranges(inside, hi) if min(b, hi) > max(a, lo)]
    return gaps


def describe_gaps(gaps: Sequence[tuple[int, int]], planned: int) -> str:
    shown = ", ".join(f"[{a}, {b})" for a, b in gaps[:3])
    more = f" and {len(gaps) - 3} more" if len(gaps) > 3 else ""
    return (
        f"{sum(b - a for a, b in gaps)} of {planned} slots have no committed part ({shown}{more}); "
        "finish the run (or `datamill fsck DIR --repair` then `datamill run`), or pass --allow-partial"
    )


def iter_lines_in_order(run_dir: str | Path, allow_partial: bool = False) -> Iterator[bytes]:
    """JSONL lines of every committed part of ``run_dir``, in slot order, each part checked whole
    (meta, size, content hash) before any of its lines is passed on."""
    for part in complete_parts(RunDir(run_dir), allow_partial):
        yield from part_lines(part)


def iter_dataset_lines(source: str | Path, allow_partial: bool = False) -> Iterator[bytes]:
    """JSONL lines of a run dir (in slot order) or of one dataset file (.jsonl, .jsonl.zst, .parquet)."""
    p = Path(source)
    if p.is_dir():
        yield from iter_lines_in_order(p, allow_partial)
    elif p.is_file():
        yield from iter_lines(p)
    else:
        raise InputError(f"{source}: no such run dir or file")


def iter_records(run_dir: str | Path, allow_partial: bool = False) -> Iterator[dict[str, Any]]:
    """Records of ``run_dir`` as dicts, in slot order."""
    for line in iter_lines_in_order(run_dir, allow_partial):
        yield orjson.loads(line)


def write_in_order(run_dir: str | Path, out: IO[bytes], allow_partial: bool = False, verify_hash: bool = True) -> int:
    """Stream ``run_dir``'s records as JSONL to ``out`` in slot order; returns parts written.

    Each part is checked whole before any of it is written, so a damaged part stops the stream
    at its start, never inside it.
    """
    parts = complete_parts(RunDir(run_dir), allow_partial)
    for part in parts:
        data, meta = read_part(part, verify_hash)
        if part.path.name.endswith(".jsonl"):
            out.write(data)
        else:
            for line in lines_of(part, data, meta):
                out.write(line)
    return len(parts)


@dataclass
class MergeStats:
    records: int
    parts: int
    slots_covered: int
    slots_planned: int
    missing: list[tuple[int, int]]


def ordered_parts(dirs: Sequence[str | Path]) -> tuple[list[Part], int, str]:
    """Parts of all ``dirs`` in slot order, checked to come from one recipe and not overlap.

    Returns ``(parts, planned slots, recipe hash)``.
    """
    if not dirs:
        raise InputError("merge: expected at least one run dir")
    hashes: dict[str, str] = {}
    planned = 0
    parts: list[Part] = []
    for d in dirs:
        manifest = RunDir(d).manifest()
        hashes[str(d)] = manifest["recipe_hash"]
        planned = int(manifest["plan"]["slots"])
        parts.extend(RunDir(d).parts())
    if len(set(hashes.values())) > 1:
        listing = ", ".join(f"{d}={h}" for d, h in hashes.items())
        raise InputError(f"merge: run dirs come from different recipes (recipe hashes {listing})")
    parts.sort(key=lambda p: (p.start, p.end))
    for a, b in itertools.pairwise(parts):
        if b.start < a.end:
            first = next(part_lines(b, verify_hash=False), None)
            sid = orjson.loads(first)["sample_id"] if first else f"slot {b.start}"
            raise DataError(
                f"merge: duplicate sample_id {sid}: parts {a.path} and {b.path} overlap on slots "
                f"[{b.start}, {min(a.end, b.end)})"
            )
    return parts, planned, next(iter(hashes.values()))


def missing_ranges(parts: Sequence[Part], planned: int) -> list[tuple[int, int]]:
    gaps = []
    pos = 0
    for p in parts:
        if p.start > pos:
            gaps.append((pos, p.start))
        pos = max(pos, p.end)
    if pos < planned:
        gaps.append((pos, planned))
    return gaps


def merge(dirs: Sequence[str | Path], out: str | Path, allow_partial: bool = False) -> MergeStats:
    """Concatenate the parts of ``dirs`` in slot order into one JSONL file, atomically.

    Fails (and writes nothing) on records from different recipes, overlapping parts, any
    duplicate or out-of-order sample_id, and, unless ``allow_partial``, slots with no part.
    """
    parts, planned, _ = ordered_parts(dirs)
    # A keyed source's sample_ids are its keys (unique by the source's scan), not (slot, index):
    # parts, which do not overlap, give the order.
    keyed = bool((RunDir(dirs[0]).manifest()["recipe"].get("source") or {}).get("key")) if dirs else False
    gaps = missing_ranges(parts, planned)
    if gaps and not allow_partial:
        raise DataError(f"merge: {describe_gaps(gaps, planned)}")
    final = Path(out)
    if final.parent and not final.parent.exists():
        raise InputError(f"merge: {final.parent}: no such directory")
    tmp = atomic.temp_path(final)
    records = 0
    prev: tuple[int, int] = (-1, -1)
    prev_sid = ""
    try:
        with open(tmp, "wb") as f:
            for part in parts:
                for line in part_lines(part):
                    try:
                        sid = orjson.loads(line)["sample_id"]
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        raise PartDamaged(f"{part.path}: damaged: a line that is not a record") from None
                    if keyed:
                        f.write(line)
                        records += 1
                        continue
                    key = parse_sample_id(sid)[2:]
                    # Records are in (slot, index) order by construction, so any repeat shows
                    # up as a step backwards: this finds every duplicate in O(1) memory.
                    if key <= prev:
                        what = "duplicate" if sid == prev_sid else "out-of-order (duplicate content?)"
                        raise DataError(f"merge: {what} sample_id {sid} in {part.path} after {prev_sid}")
                    if not part.start <= key[0] < part.end:
                        raise DataError(f"merge: sample_id {sid} in {part.path} is outside its slots")
                    prev, prev_sid = key, sid
                    f.write(line)
                    records += 1
            f.flush()
            os.fsync(f.fileno())
        atomic.publish(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    covered = sum(p.end - p.start for p in parts)
    return MergeStats(records, len(parts), covered, planned, gaps)
