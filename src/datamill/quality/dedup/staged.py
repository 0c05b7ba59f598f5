"""Dedup at any size: the in-memory pass's clusters, found in stages that stream through disk.

Memory is bounded by a budget, not by the number of texts; every stage writes its outputs
atomically (:mod:`datamill.store.atomic`) and a rerun reuses what is there, so a SIGKILL at any
moment costs at most the item in progress. Under ``ROOT`` (``RUN/dedup/`` for a run dir):

1. **sign** — per shard (a part, or a part with regenerated slots), rows in ``(slot, text)``
   order: the method's signature of each row (MinHash: 128 uint32; exact and structural: the
   16-byte hash) and each band's keys sorted with their rows, cut by the keys' top 8 bits:
   ``shards/ID.{slots,sig,keys,rows,offs}.npy``. ``ID`` hashes the method and the shard's
   content, so a resumed or extended run signs only new shards.
2. **link** — per method, band and range of key prefixes sized to the budget, the shards' sorted
   runs are merged (a stable sort of runs that are each sorted already) and each bucket member
   is linked to the members just before it in the bucket (:func:`.base.window_candidates`, the
   definition the in-memory path uses too), then verified in batches whose signatures are read
   from the shards' memory maps and released: ``work/PLAN/links/METHOD-bBB-LO-HI.npy``.
3. **cluster** — a union-find over row ids (one int64 array, :func:`.base.components`) reads
   every link file; each cluster keeps its lowest slot: ``work/PLAN/rejected.npy``
   (``slot, kept slot`` rows).

``PLAN`` hashes the methods, the shard ids in order and the budget, so a changed input never
reuses another input's links.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datamill.quality.dedup.base import Keyed, components, link_band, rejected_from_roots
from datamill.store import atomic

PREFIX_BITS = 8
PREFIXES = 1 << PREFIX_BITS
DEFAULT_MEMORY_MB = 512
# Working bytes per band entry while a key range is linked: keys and rows, the sort order, the
# sorted copies, and up to WINDOW candidate pairs per entry in a bucket of duplicates.
BYTES_PER_ENTRY = 96
# Bytes per candidate pair verified at once: both signatures gathered, and up to two pages of
# each shard's memory map touched (released after each batch).
BYTES_PER_CHECK = 2 * 4096 + 2 * 512
PAUSE_ENV = "DATAMILL_DEDUP_PAUSE"  # tests: "STAGE:N" stops before publishing the Nth output of STAGE


@dataclass(frozen=True)
class Shard:
    """Rows signed together. ``key`` names their content: the same key promises the same rows.

    ``rows()`` yields ``(slot, text)``; shards come in slot order and their slot ranges do not
    overlap (a run dir's parts).
    """

    key: str
    rows: Callable[[], Iterable[tuple[int, str]]]


def _id(*parts: str) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=12).hexdigest()


_pause_counts: dict[str, int] = {}


def _maybe_pause(stage: str) -> None:
    want = os.environ.get(PAUSE_ENV, "")
    if not want.startswith(stage + ":"):
        return
    _pause_counts[stage] = _pause_counts.get(stage, 0) + 1
    if _pause_counts[stage] == int(want.split(":", 1)[1]):
        print(f"dedup paused in {stage}", file=sys.stderr, flush=True)
        while True:  # the test kills us here, mid-stage, a temporary file written but not published
            time.sleep(1)


def _save(path: Path, arr: Any, stage: str) -> None:
    """Atomically write ``arr`` as ``path`` (.npy)."""
    tmp = atomic.temp_path(path)
    try:
        with open(tmp, "wb") as f:
            np.save(f, arr)
            f.flush()
            os.fsync(f.fileno())
        _maybe_pause(stage)
        atomic.publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _clear_stale_temps(folder: Path) -> None:
    """Temporary files of writers that are gone (a SIGKILL between write and rename)."""
    if not folder.is_dir():
        return
    for entry in os.scandir(folder):
        if entry.name.startswith(".") and atomic.TMP_MARK in entry.name:
            pid = entry.name.rsplit(atomic.TMP_MARK, 1)[1].split("-", 1)[0]
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                Path(entry.path).unlink(missing_ok=True)
            except (ValueError, PermissionError):
                pass


@dataclass
class Signed:
    """One shard's stage-1 files."""

    base: Path
    n: int

    def load(self, what: str) -> Any:
        return np.load(f"{self.base}.{what}.npy", mmap_mode="r")


class StagedDedup:
    """Staged dedup of ``shards`` by ``methods`` (pairs from any method join clusters) under ``root``."""

    def __init__(self, methods: Sequence[Keyed], root: str | Path, memory_mb: int = DEFAULT_MEMORY_MB) -> None:
        self.methods = list(methods)
        self.root = Path(root)
        self.memory = max(16, int(memory_mb)) * 2**20
        self.shards_dir = self.root / "shards"

    # -- stage 1 ---------------------------------------------------------------------------
    def sign(self, shard: Shard, method: Keyed) -> Signed:
        """Signatures and sorted band keys of one shard (reused when already written)."""
        base = self.shards_dir / _id(method.ident, shard.key)
        done = Path(f"{base}.offs.npy")  # written last: its presence means the shard is complete
        if done.is_file():
            return Signed(base, len(np.load(f"{base}.slots.npy", mmap_mode="r")))
        rows = sorted(shard.rows())
        slots = np.array([s for s, _ in rows], dtype=np.int64)
        sigs = method.sign([t for _, t in rows])
        del rows
        keys = method.band_keys(sigs)
        order = np.argsort(keys, axis=0, kind="stable").T  # (bands, n): rows of each band by key
        sorted_keys = np.take_along_axis(keys.T, order, axis=1)
        bounds = np.arange(PREFIXES, dtype=np.uint64) << np.uint64(64 - PREFIX_BITS)
        offs = np.empty((method.bands, PREFIXES + 1), dtype=np.int64)
        for b in range(method.bands):
            offs[b, :PREFIXES] = np.searchsorted(sorted_keys[b], bounds, side="left")
            offs[b, PREFIXES] = len(slots)
        self.shards_dir.mkdir(parents=True, exist_ok=True)
        for what, arr in (("slots", slots), ("sig", sigs), ("keys", sorted_keys), ("rows", order), ("offs", offs)):
            _save(Path(f"{base}.{what}.npy"), np.ascontiguousarray(arr), "sign")
        return Signed(base, len(slots))

    # -- stage 2 ---------------------------------------------------------------------------
    def _pieces(self, counts: Any) -> list[tuple[int, int]]:
        """Prefix ranges ``[lo, hi)`` whose entries (summed over shards) fit the budget."""
        most = max(1, self.memory // BYTES_PER_ENTRY)
        out, lo, acc = [], 0, 0
        for p in range(PREFIXES):
            c = int(counts[p])
            if acc and acc + c > most:
                out.append((lo, p))
                lo, acc = p, 0
            acc += c
        out.append((lo, PREFIXES))
        return out

    def _gather(self, signed: list[Signed], starts: Any, width: int, dtype: Any) -> Callable[[Any], Any]:
        def sig_of(idx: Any) -> Any:
            out = np.empty((len(idx), width), dtype=dtype)
            which = np.searchsorted(starts, idx, side="right") - 1
            order = np.argsort(which, kind="stable")
            ws = which[order]
            cuts = np.flatnonzero(np.diff(ws)) + 1
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(ws)], strict=True):
                s = int(ws[lo])
                sel = order[lo:hi]
                sig = signed[s].load("sig")  # a fresh map, unmapped when dropped: RSS stays bounded
                out[sel] = sig[idx[sel] - starts[s]]
                del sig
            return out

        return sig_of

    def link(self, method: Keyed, signed: list[Signed], links_dir: Path) -> list[Path]:
        """Every band's verified links, one file per key range (reused when already written)."""
        starts = np.zeros(len(signed) + 1, dtype=np.int64)
        starts[1:] = np.cumsum([s.n for s in signed])
        width, dtype = (None, None)
        for s in signed:
            if s.n:
                sig = s.load("sig")
                width, dtype = sig.shape[1], sig.dtype
                break
        files: list[Path] = []
        if width is None:
            return files
        sig_of = self._gather(signed, starts[:-1], int(width), dtype)
        batch = max(1024, self.memory // 4 // BYTES_PER_CHECK)
        offs = [s.load("offs") for s in signed]
        for band in range(method.bands):
            counts = np.zeros(PREFIXES, dtype=np.int64)
            for o in offs:
                counts += np.diff(o[band])
            for lo, hi in self._pieces(counts):
                out = links_dir / f"{method.name}-b{band:02d}-{lo:03d}-{hi:03d}.npy"
                files.append(out)
                if out.is_file():
                    continue
                key_parts, row_parts = [], []
                for i, s in enumerate(signed):
                    a, b = int(offs[i][band, lo]), int(offs[i][band, hi])
                    if a == b:
                        continue
                    key_parts.append(np.array(s.load("keys")[band, a:b]))
                    row_parts.append(np.array(s.load("rows")[band, a:b]) + starts[i])
                if key_parts:
                    keys = np.concatenate(key_parts)
                    rows = np.concatenate(row_parts)
                    del key_parts, row_parts
                    # Runs come in shard order, rows ascending within each: a stable sort by key
                    # alone gives (key, row) order, the merge of the sorted runs.
                    order = np.argsort(keys, kind="stable")
                    keys, rows = keys[order], rows[order]
                    del order
                    a_, b_ = link_band(method, keys, rows, sig_of, batch)
                    del keys, rows
                    edges = np.stack([a_, b_], axis=1)
                else:
                    edges = np.zeros((0, 2), dtype=np.int64)
                _save(out, edges, "link")
        return files

    # -- stage 3 ---------------------------------------------------------------------------
    def run(self, shards: Sequence[Shard]) -> dict[int, int]:
        """Slot -> the slot it duplicates, as :func:`datamill.quality.dedup.rejected_slots` answers."""
        for d in (self.shards_dir, self.root / "work"):
            _clear_stale_temps(d)
        signed_by: dict[str, list[Signed]] = {m.ident: [self.sign(s, m) for s in shards] for m in self.methods}
        first = signed_by[self.methods[0].ident]
        plan = _id(
            *(f"{m.ident}:{getattr(m, 'threshold', '')}" for m in self.methods),
            str(self.memory),
            *(s.key for s in shards),
        )
        work = self.root / "work" / plan
        result = work / "rejected.npy"
        if not result.is_file():
            links_dir = work / "links"
            links_dir.mkdir(parents=True, exist_ok=True)
            _clear_stale_temps(links_dir)
            _clear_stale_temps(work)
            files = [f for m in self.methods for f in self.link(m, signed_by[m.ident], links_dir)]
            slots = np.concatenate([np.asarray(s.load("slots")) for s in first] or [np.zeros(0, np.int64)])
            _check_order(slots)
            parent = np.arange(len(slots), dtype=np.int64)
            for f in files:
                e = np.load(f)
                parent = components(len(slots), e[:, 0], e[:, 1], parent)
            rejected = rejected_from_roots(parent, slots)
            del parent, slots
            arr = np.array(sorted(rejected.items()), dtype=np.int64).reshape(-1, 2)
            _save(result, arr, "cluster")
        arr = np.load(result)
        return dict(zip(arr[:, 0].tolist(), arr[:, 1].tolist(), strict=True))

    def count_rows(self, shards: Sequence[Shard], slots: Iterable[int] | None = None) -> int:
        """How many rows the (signed) ``shards`` hold, or hold of ``slots``."""
        want = None if slots is None else np.array(sorted(set(slots)), dtype=np.int64)
        m = self.methods[0]
        total = 0
        for s in shards:
            have = np.load(f"{self.shards_dir / _id(m.ident, s.key)}.slots.npy", mmap_mode="r")
            total += len(have) if want is None else int(np.isin(have, want).sum())
        return total

    def prune(self, keep: Sequence[Shard]) -> None:
        """Remove the link work and the shard files not of ``keep`` (the dataset as it now is)."""
        shutil.rmtree(self.root / "work", ignore_errors=True)
        wanted = {_id(m.ident, s.key) for m in self.methods for s in keep}
        if self.shards_dir.is_dir():
            for entry in os.scandir(self.shards_dir):
                if entry.name.split(".", 1)[0] not in wanted:
                    Path(entry.path).unlink(missing_ok=True)


def _check_order(slots: Any) -> None:
    if len(slots) > 1 and bool((slots[1:] < slots[:-1]).any()):
        raise ValueError("staged dedup: shards must come in slot order, their slot ranges not overlapping")


def staged_rejected(
    shards: Sequence[Shard], methods: Sequence[Keyed], root: str | Path, memory_mb: int = DEFAULT_MEMORY_MB
) -> dict[int, int]:
    """Slot -> the slot it duplicates (every cluster keeps its lowest slot), staged under ``root``."""
    return StagedDedup(methods, root, memory_mb).run(shards)
