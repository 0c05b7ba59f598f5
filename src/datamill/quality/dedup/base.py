"""The dedup interface: a method turns texts into clusters; rounds and regeneration are shared.

A method implements ``pairs(texts) -> iterable of (i, j)`` of near-identical items. Clusters
are the connected components of those pairs, and each keeps its lowest slot: a function of the
set of records, not of the order they were produced or read in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol


class Method(Protocol):
    name: str

    def pairs(self, texts: Sequence[str]) -> Iterable[tuple[int, int]]:
        """Index pairs of items this method calls duplicates of each other."""


def clusters(n: int, pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Connected components (of size > 1) of ``pairs`` over ``range(n)``, each sorted."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return [sorted(g) for g in groups.values() if len(g) > 1]


class Hashed:
    """Shared by the hash methods (exact, structural): the staged form of :func:`hash_pairs`.

    The signature is the 16-byte blake2b of :meth:`key_text`, the one band key its first 8 bytes,
    and a pair is a duplicate when all 16 bytes are equal.
    """

    name = "hashed"
    bands = 1

    @property
    def ident(self) -> str:
        return f"{self.name}-v1"

    def key_text(self, text: str) -> str:
        raise NotImplementedError

    def sign(self, texts: Sequence[str]) -> Any:
        import hashlib

        import numpy as np

        raw = b"".join(hashlib.blake2b(self.key_text(t).encode(), digest_size=16).digest() for t in texts)
        return np.frombuffer(raw, dtype="<u8").reshape(len(texts), 2).copy()

    def band_keys(self, sigs: Any) -> Any:
        return sigs[:, :1].copy()

    def same(self, a: Any, b: Any) -> Any:
        return (a == b).all(axis=1)

    def pairs(self, texts: Sequence[str]) -> list[tuple[int, int]]:
        return hash_pairs([self.key_text(t) for t in texts])


def hash_pairs(keys: Sequence[str]) -> list[tuple[int, int]]:
    """Pairs of items whose keys are equal (each item paired with the first of its key)."""
    first: dict[str, int] = {}
    out = []
    for i, k in enumerate(keys):
        j = first.setdefault(k, i)
        if j != i:
            out.append((j, i))
    return out


# Bucket linking, shared by the in-memory and the staged paths so that both find the same clusters.
# Within a band bucket, members are taken in row order and each is linked to the WINDOW members
# just before it in that bucket when the method verifies the pair (MinHash: estimated Jaccard at
# least the threshold). A bucket of k members costs at most WINDOW * k checks, never k**2 (a
# collapse cluster of 20K near-identical texts is one bucket per band).
WINDOW = 3


def window_candidates(keys: Any, rows: Any, window: int = WINDOW) -> tuple[Any, Any]:
    """Row pairs ``(a, b)``, ``a < b``, at most ``window`` apart within a run of equal ``keys``.

    ``keys`` and ``rows`` are numpy arrays sorted by ``(key, row)``.
    """
    import numpy as np

    a_parts, b_parts = [], []
    for w in range(1, window + 1):
        if len(keys) <= w:
            break
        same = keys[w:] == keys[:-w]
        a_parts.append(rows[:-w][same])
        b_parts.append(rows[w:][same])
    if not a_parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    return np.concatenate(a_parts).astype(np.int64), np.concatenate(b_parts).astype(np.int64)


def sort_bucket_runs(keys: Any, rows: Any) -> tuple[Any, Any]:
    """``keys`` and ``rows`` sorted by ``(key, row)``."""
    import numpy as np

    order = np.lexsort((rows, keys))
    return keys[order], rows[order]


def components(n: int, a: Any, b: Any, parent: Any = None) -> Any:
    """Union-find over ``range(n)`` as a numpy array: ``parent[i]`` is the lowest row of i's component.

    Roots are hooked onto smaller roots and paths are shortcut with whole-array jumps, so the
    work is a few numpy passes per batch of edges, not a Python loop per edge. Pass ``parent`` to
    add edges to an earlier result.
    """
    import numpy as np

    if parent is None:
        parent = np.arange(n, dtype=np.int64)
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    while len(a):
        ra, rb = parent[a], parent[b]
        open_ = ra != rb
        a, b, ra, rb = a[open_], b[open_], ra[open_], rb[open_]
        if not len(a):
            break
        lo, hi = np.minimum(ra, rb), np.maximum(ra, rb)
        np.minimum.at(parent, hi, lo)  # hi is a root: parent[hi] == hi > lo
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    return parent


def rejected_from_roots(parent: Any, slots: Any) -> dict[int, int]:
    """Slot -> the slot it duplicates, from a component array over rows sorted by ``(slot, text)``.

    Each component keeps its lowest slot (its root's, as rows are in slot order). A slot whose
    records fall in several components takes the answer of the component with the highest root,
    as :func:`datamill.quality.dedup.rejected_slots` does when it applies components in order.
    """
    import numpy as np

    keep = slots[parent]
    rej = np.nonzero(keep != slots)[0]
    if not len(rej):
        return {}
    s, k, r = slots[rej], keep[rej], parent[rej]
    order = np.lexsort((r, s))
    s, k = s[order], k[order]
    last = np.ones(len(s), dtype=bool)
    last[:-1] = s[1:] != s[:-1]
    return dict(zip(s[last].tolist(), k[last].tolist(), strict=True))


class Keyed(Protocol):
    """A method that can also run staged: a fixed-width signature per text, band keys, a check."""

    name: str
    bands: int
    ident: str  # changes whenever a stored signature would

    def sign(self, texts: Sequence[str]) -> Any:
        """``(n, width)`` array of signatures."""

    def band_keys(self, sigs: Any) -> Any:
        """``(n, bands)`` uint64 keys; rows sharing a key in a band are candidates."""

    def same(self, a: Any, b: Any) -> Any:
        """Bool array: is each signature pair ``(a[i], b[i])`` a duplicate?"""


def link_band(method: Keyed, keys: Any, rows: Any, sig_of: Any, batch: int = 0) -> tuple[Any, Any]:
    """The verified links of one band's sorted ``(key, row)`` runs; ``sig_of(rows)`` gathers signatures.

    ``batch`` (> 0) verifies that many candidate pairs at a time, to bound the gathered signatures.
    """
    import numpy as np

    a, b = window_candidates(keys, rows)
    if not len(a):
        return a, b
    step = batch if batch > 0 else len(a)
    ok = np.zeros(len(a), dtype=bool)
    for lo in range(0, len(a), step):
        ok[lo : lo + step] = method.same(sig_of(a[lo : lo + step]), sig_of(b[lo : lo + step]))
    return a[ok], b[ok]


def keyed_pairs(method: Keyed, texts: Sequence[str]) -> list[tuple[int, int]]:
    """In memory: the verified bucket links of ``texts`` (the staged path finds the same ones)."""
    import numpy as np

    sigs = method.sign(texts)
    keys = method.band_keys(sigs)
    rows = np.arange(len(texts), dtype=np.int64)
    found: set[tuple[int, int]] = set()
    for band in range(method.bands):
        k, r = sort_bucket_runs(keys[:, band], rows)
        a, b = link_band(method, k, r, lambda idx: sigs[idx])
        found.update(zip(a.tolist(), b.tolist(), strict=True))
    return sorted(found)
