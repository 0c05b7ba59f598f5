"""Statistics of one pass over any number of records, in memory that does not grow with N (issue 23).

- :class:`IntHistogram`: lengths (characters, tokens) are integers, so a count per value is the
  exact distribution; percentiles and binned histograms come from it, and its size is the number of
  distinct lengths (bounded by the longest text), not the number of texts.
- :class:`CappedCounter`: category counts, with every value past ``cap`` distinct ones counted
  under :data:`OTHER`.
- :class:`DuplicateIds`: ids seen more than once, without holding the ids. Each id's 64-bit hash
  goes to a buffer of fixed size (:data:`SPILL_AT`); a full buffer is sorted in place and spilled
  to a temporary file. At the end the spilled runs are read back one hash range at a time
  (:data:`RANGES` ranges, so the merge holds about N / RANGES entries), and equal hashes are only
  *candidates*. The ids of candidates are compared for real in a second pass over the source,
  which runs only when there are candidates: a hash collision never names a duplicate (no false
  positives), and a dataset without duplicates is read once. Memory: the buffer (8 bytes an
  entry, 2 MiB), plus one entry per duplicated id in the second pass.
"""

from __future__ import annotations

import os
import tempfile
from array import array
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import numpy as np

OTHER = "(other)"
SPILL_AT = 1 << 18  # ids per sorted run: 2 MiB of hashes, sorted in place
RANGES = 256  # hash ranges merged one at a time at the end


class IntHistogram:
    """The exact distribution of integer values: a count per value."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()

    def update(self, values: Iterable[int]) -> None:
        self.counts.update(values)  # C loop (collections._count_elements)

    def merge(self, other: IntHistogram) -> None:
        self.counts.update(other.counts)

    @property
    def n(self) -> int:
        return sum(self.counts.values())

    def percentiles(self) -> dict[str, float]:
        """p10, p50, p90 (the value at index ``int(f * n)`` of the sorted values), max and mean."""
        n = self.n
        if not n:
            return {"p10": 0, "p50": 0, "p90": 0, "max": 0, "mean": 0.0}
        wanted = [min(n - 1, int(f * n)) for f in (0.10, 0.50, 0.90)]
        found: list[int] = []
        seen = 0
        for value in sorted(self.counts):
            seen += self.counts[value]
            while len(found) < len(wanted) and wanted[len(found)] < seen:
                found.append(value)
        total = sum(v * c for v, c in self.counts.items())
        return {"p10": found[0], "p50": found[1], "p90": found[2], "max": max(self.counts), "mean": round(total / n, 2)}

    def bins(self, bins: int = 20) -> dict[str, list[int]]:
        """Equal-width bins from the smallest value to the largest (the report's length plots)."""
        if not self.counts:
            return {"edges": [], "counts": []}
        lo, hi = min(self.counts), max(self.counts)
        width = max(1, -(-(hi - lo + 1) // bins))
        counts = [0] * bins
        for v, c in self.counts.items():
            counts[min(bins - 1, (v - lo) // width)] += c
        return {"edges": [lo + i * width for i in range(bins + 1)], "counts": counts}


class CappedCounter(Counter[Any]):
    """Counts values; once ``cap`` distinct values are held, each new one counts under :data:`OTHER`."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap

    def add(self, value: Any) -> None:
        if value in self or len(self) < self.cap:
            self[value] += 1
        else:
            self[OTHER] += 1


class DuplicateIds:
    """Ids seen more than once (see the module docstring): :meth:`add` each, then :meth:`finish`."""

    def __init__(self, spill_at: int | None = None) -> None:
        self.spill_at = spill_at or SPILL_AT
        self.hashes = array("q")
        self.runs: list[tuple[str, np.ndarray]] = []  # (file of sorted hashes, where each hash range starts)
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def add(self, value: Hashable) -> None:
        self.hashes.append(hash(value))
        if len(self.hashes) >= self.spill_at:
            self._spill()

    def _spill(self) -> None:
        h = np.frombuffer(self.hashes, dtype=np.int64)  # a view: sorted in place, no copy
        h.sort()
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="datamill-ids-")
        path = os.path.join(self._dir.name, f"run-{len(self.runs):05d}.i64")
        h.tofile(path)
        self.runs.append((path, np.append(np.searchsorted(h, _STARTS), len(h))))
        del h  # the view goes before the buffer it holds
        self.hashes = array("q")

    def candidate_hashes(self) -> np.ndarray:
        """The hashes held by two ids or more (sorted, distinct): every duplicate, and rare collisions."""
        try:
            if not self.runs:
                h = np.frombuffer(self.hashes, dtype=np.int64)
                h.sort()
                return _repeated(h)
            if len(self.hashes):
                self._spill()
            found = []
            for r in range(RANGES):
                pieces = [
                    np.fromfile(path, dtype=np.int64, count=int(at[r + 1] - at[r]), offset=int(at[r]) * 8)
                    for path, at in self.runs
                    if at[r + 1] > at[r]
                ]
                if pieces:
                    found.append(_repeated(np.sort(np.concatenate(pieces))))
            return np.concatenate(found) if found else np.empty(0, dtype=np.int64)
        finally:
            self.close()

    def finish(self, reread: Callable[[], Iterable[Hashable]], limit: int = 1000) -> tuple[int, list[str]]:
        """(extra occurrences, the first ``limit`` of them by id, in order met). ``reread`` yields the
        ids again, for the second pass that confirms candidates; it is called only if there are any."""
        candidates = self.candidate_hashes()
        if not len(candidates):
            return 0, []
        wanted = set(candidates.tolist())
        held: dict[int, list[Hashable]] = {}  # hash -> the distinct ids holding it, in order met
        count = 0
        names: list[str] = []
        for value in reread():
            h = hash(value)
            if h not in wanted:
                continue
            same = held.setdefault(h, [])
            if value in same:
                count += 1
                if len(names) < limit:
                    names.append(str(value))
            else:
                same.append(value)
        return count, names

    def close(self) -> None:
        self.hashes = array("q")
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


# Where each of RANGES equal ranges of the int64 hashes starts.
_STARTS = np.array([-(1 << 63) + i * ((1 << 64) // RANGES) for i in range(RANGES)], dtype=np.int64)


def _repeated(sorted_hashes: np.ndarray) -> np.ndarray:
    if len(sorted_hashes) < 2:
        return np.empty(0, dtype=np.int64)
    same = sorted_hashes[1:] == sorted_hashes[:-1]
    return np.unique(sorted_hashes[1:][same])
