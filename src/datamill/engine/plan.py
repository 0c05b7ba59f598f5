"""The plan: the deterministic expansion of a recipe into slots, strata, cycles and ranges.

Nothing here grows with the number of slots: a slot's stratum, cycle and seed are computed from
its index on demand, so a plan of 10^12 slots costs the same memory as one of 10.
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple

from datamill.recipe.model import LLMColumn, Recipe, Scalar, TableSampler
from datamill.recipe.tables import Table
from datamill.seeds import sub_seed


class SlotRange(NamedTuple):
    """Slots ``[start, end)``: the work of one part."""

    start: int
    end: int

    def __len__(self) -> int:  # type: ignore[override]
        return self.end - self.start


def largest_remainder(total: int, weights: list[Fraction]) -> list[int]:
    """Split ``total`` into integer counts proportional to ``weights``, summing exactly to it.

    Each count is the floor of its exact share; the leftover units go to the largest fractional
    remainders, ties to the earlier weight.
    """
    wsum = sum(weights)
    if wsum <= 0:
        raise ValueError("weights must sum to more than zero")
    shares = [total * w / wsum for w in weights]
    counts = [int(s) for s in shares]
    left = total - sum(counts)
    order = sorted(range(len(weights)), key=lambda j: (-(shares[j] - counts[j]), j))
    for j in order[:left]:
        counts[j] += 1
    return counts


class _Permutation:
    """A keyed bijection on ``[0, n)`` (a Feistel network with cycle walking), O(1) memory.

    Spreads each stratum over the whole slot space, so every shard and every prefix of a run
    sees a mix of strata, while the counts stay exact.
    """

    def __init__(self, n: int, key: int) -> None:
        self.n = n
        bits = max(2, (n - 1).bit_length())
        bits += bits & 1
        self.half = bits // 2
        self.mask = (1 << self.half) - 1
        self.keys = [sub_seed(key, f"feistel{r}") for r in range(4)]

    def _round(self, x: int, k: int) -> int:
        x = ((x ^ k) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 29
        return x & self.mask

    def __call__(self, i: int) -> int:
        x = i
        while True:
            left, right = x >> self.half, x & self.mask
            for k in self.keys:
                left, right = right, left ^ self._round(right, k)
            x = (left << self.half) | right
            if x < self.n:
                return x


@dataclass(frozen=True)
class Cell:
    """One quota stratum: fixed column values and how many slots carry them."""

    values: dict[str, Scalar]
    count: int


class Plan:
    """Slots, strata, cycles and ranges of one recipe."""

    def __init__(self, recipe: Recipe, tables: dict[str, Table] | None = None) -> None:
        self.tables = tables or {}
        self._recipe_columns = dict(recipe.columns)
        self.name = recipe.name
        self.seed = recipe.seed
        self.size = recipe.size
        self.part_size = recipe.output.part_size
        self.cycles: dict[str, list[Any]] = dict(recipe.cycles)
        self.cycle_len = len(next(iter(self.cycles.values()))) if self.cycles else 0
        self.cells = self._allocate(recipe)
        # A planner's categories: one contiguous block of slots each, in plan order, so a worker's
        # batch (the pack grid) holds one category, and a category's count is exact.
        self.categories: list[dict[str, Any]] = []
        if recipe.planner is not None and isinstance(recipe.params.get("plan"), dict):
            self.categories = list(recipe.params["plan"]["categories"])
        self._cat_bounds = list(itertools.accumulate(int(c["count"]) for c in self.categories))
        # Packed LLM columns group slots by slot // k: shard bounds respect that grid.
        self.align = 1
        for col in recipe.columns.values():
            if isinstance(col, LLMColumn):
                self.align = math.lcm(self.align, col.llm.pack)
        self._bounds = list(itertools.accumulate(c.count for c in self.cells))
        self._perm = _Permutation(self.size, sub_seed(self.seed, "strata")) if self.cells else None

    def _allocate(self, recipe: Recipe) -> list[Cell]:
        if not recipe.quotas:
            return []
        axes: list[list[tuple[str, Scalar, Fraction]]] = []
        for col, weights in recipe.quotas.items():
            if weights == "table":  # a table sampler's rows, by weight: exact counts of the joint table
                spec = recipe.columns[col]
                assert isinstance(spec, TableSampler)
                ws = self.tables[spec.table].weights(spec.weight)
                total = sum(Fraction(w) for w in ws)
                axes.append([(col, i, Fraction(w) / total) for i, w in enumerate(ws) if w > 0])
                continue
            total = sum(Fraction(w) for w in weights.values())
            axes.append([(col, v, Fraction(w) / total) for v, w in weights.items()])
        cells = list(itertools.product(*axes))
        cell_weights = []
        for cell in cells:
            w = Fraction(1)
            for _, _, share in cell:
                w *= share
            cell_weights.append(w)
        counts = largest_remainder(self.size, cell_weights)
        return [Cell({col: v for col, v, _ in cell}, n) for cell, n in zip(cells, counts, strict=True)]

    def stratum(self, slot: int) -> dict[str, Scalar]:
        """Column values fixed by quotas for ``slot`` (empty without quotas)."""
        if self._perm is None:
            return {}
        return self.cells[bisect_right(self._bounds, self._perm(slot))].values

    def label(self, values: dict[str, Scalar]) -> str:
        """A quota cell as words: a table quota's row index shown as its cells."""
        parts = []
        for col, v in values.items():
            spec = self._recipe_columns.get(col)
            if isinstance(spec, TableSampler) and isinstance(v, int) and spec.table in self.tables:
                table = self.tables[spec.table]
                row = table.rows[v]
                cells = [c for i, c in enumerate(row) if table.columns[i] != spec.weight]
                parts.append(f"{col}={'/'.join(cells)}")
            else:
                parts.append(f"{col}={v}")
        return ", ".join(parts)

    def category(self, slot: int) -> dict[str, Any] | None:
        """The plan category of ``slot`` (None without a planner, or before planning)."""
        if not self.categories:
            return None
        return self.categories[min(bisect_right(self._cat_bounds, slot), len(self.categories) - 1)]

    def category_blocks(self) -> list[dict[str, Any]]:
        """Each plan category with its count and slot block ``[start, end)``."""
        starts = [0, *self._cat_bounds[:-1]]
        return [{"name": c["name"], "count": c["count"], "slots": [lo, hi]}
                for c, lo, hi in zip(self.categories, starts, self._cat_bounds, strict=True)]  # fmt: skip

    def cycle(self, slot: int) -> tuple[int, dict[str, Any]] | None:
        """``(cycle index, parameters)`` of ``slot``, or None when the recipe has no cycles."""
        if not self.cycle_len:
            return None
        c = slot % self.cycle_len
        return c, {k: v[c] for k, v in self.cycles.items()}

    def shard_bounds(self, num_shards: int, shard_index: int) -> SlotRange:
        """The contiguous slots of one shard; shards partition ``[0, size)``.

        Bounds are rounded down to multiples of ``align`` (the LLM pack grid), the last one is ``size``.
        """

        def bound(s: int) -> int:
            return self.size if s >= num_shards else (self.size * s // num_shards) // self.align * self.align

        return SlotRange(bound(shard_index), bound(shard_index + 1))

    def ranges(self, num_shards: int = 1, shard_index: int = 0) -> Iterator[SlotRange]:
        """The part ranges of one shard: the global ``part_size`` grid cut at the shard's bounds.

        The grid is global, so shards that share a run dir never write overlapping parts.
        """
        lo, hi = self.shard_bounds(num_shards, shard_index)
        start = lo
        while start < hi:
            end = min(hi, (start // self.part_size + 1) * self.part_size)
            yield SlotRange(start, end)
            start = end

    def summary(self) -> dict[str, Any]:
        """What the manifest records of the plan."""
        return {
            "slots": self.size,
            "part_size": self.part_size,
            "quota_cells": [{"values": c.values, "count": c.count} for c in self.cells],
            **({"categories": self.category_blocks()} if self.categories else {}),
            "cycles": self.cycles,
        }
