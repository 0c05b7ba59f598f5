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
from datamill.store.formats import copy_plain, iter_lines
from datamill.store.rundir import Part, RunDir


def iter_lines_in_order(run_dir: str | Path) -> Iterator[bytes]:
    """JSONL lines of every committed part of ``run_dir``, in slot order."""
    rd = RunDir(run_dir)
    rd.manifest()  # refuses a dir that is not a run dir
    for part in rd.parts():
        yield from iter_lines(part.path)


def iter_dataset_lines(source: str | Path) -> Iterator[bytes]:
    """JSONL lines of a run dir (in slot order) or of one dataset file (.jsonl, .jsonl.zst, .parquet)."""
    p = Path(source)
    if p.is_dir():
        yield from iter_lines_in_order(p)
    elif p.is_file():
        yield from iter_lines(p)
    else:
        raise InputError(f"{source}: no such run dir or file")


def iter_records(run_dir: str | Path) -> Iterator[dict[str, Any]]:
    """Records of ``run_dir`` as dicts, in slot order."""
    for line in iter_lines_in_order(run_dir):
        yield orjson.loads(line)


def write_in_order(run_dir: str | Path, out: IO[bytes]) -> int:
    """Stream ``run_dir``'s records as JSONL to ``out`` in slot order; returns parts written."""
    rd = RunDir(run_dir)
    rd.manifest()
    parts = rd.parts()
    for part in parts:
        if not copy_plain(part.path, out):
            for line in iter_lines(part.path):
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
            first = next(iter_lines(b.path), None)
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
    gaps = missing_ranges(parts, planned)
    if gaps and not allow_partial:
        shown = ", ".join(f"[{a}, {b})" for a, b in gaps[:3])
        more = f" and {len(gaps) - 3} more" if len(gaps) > 3 else ""
        raise DataError(
            f"merge: {sum(b - a for a, b in gaps)} of {planned} slots have no committed part "
            f"({shown}{more}); finish the run(s) or pass --allow-partial"
        )
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
                for line in iter_lines(part.path):
                    sid = orjson.loads(line)["sample_id"]
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
