"""The dedup interface: a method turns texts into clusters; rounds and regeneration are shared.

A method implements ``pairs(texts) -> iterable of (i, j)`` of near-identical items. Clusters
are the connected components of those pairs, and each keeps its lowest slot: a function of the
set of records, not of the order they were produced or read in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol


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


def hash_pairs(keys: Sequence[str]) -> list[tuple[int, int]]:
    """Pairs of items whose keys are equal (each item paired with the first of its key)."""
    first: dict[str, int] = {}
    out = []
    for i, k in enumerate(keys):
        j = first.setdefault(k, i)
        if j != i:
            out.append((j, i))
    return out
