"""Sampler columns: categorical, integer, uniform, conditional."""

from __future__ import annotations

import itertools
import random
from bisect import bisect_right
from typing import Any

from datamill.columns.base import Column, SlotState
from datamill.columns.fields import field_value
from datamill.recipe.model import CategoricalSampler, ConditionalSampler, IntegerSampler, TableSampler, UniformSampler
from datamill.recipe.tables import Table
from datamill.seeds import sub_seed


class Categorical(Column):
    def __init__(self, name: str, spec: CategoricalSampler) -> None:
        super().__init__(name, spec.emit)
        self.values = list(spec.values)
        self.cum = list(itertools.accumulate(spec.weights or [1.0] * len(self.values)))

    def evaluate_row(self, state: SlotState, row: dict[str, Any], rng: random.Random) -> Any:
        # A quota fixes this column for the slot's stratum: the plan decides, not the dice.
        if self.name in state.stratum:
            return state.stratum[self.name]
        return rng.choices(self.values, cum_weights=self.cum)[0]


class Integer(Column):
    def __init__(self, name: str, spec: IntegerSampler) -> None:
        super().__init__(name, spec.emit)
        self.low, self.high = spec.low, spec.high

    def evaluate_row(self, state: SlotState, row: dict[str, Any], rng: random.Random) -> Any:
        return rng.randint(self.low, self.high)


class Uniform(Column):
    def __init__(self, name: str, spec: UniformSampler) -> None:
        super().__init__(name, spec.emit)
        self.low, self.high = spec.low, spec.high

    def evaluate_row(self, state: SlotState, row: dict[str, Any], rng: random.Random) -> Any:
        return self.low + (self.high - self.low) * rng.random()


class Conditional(Column):
    def __init__(self, name: str, spec: ConditionalSampler) -> None:
        super().__init__(name, spec.emit)
        self.on = spec.on
        self.table = {key: (list(row), list(itertools.accumulate(row.values()))) for key, row in spec.table.items()}

    def evaluate_row(self, state: SlotState, row: dict[str, Any], rng: random.Random) -> Any:
        key = row[self.on]
        entry = self.table.get(key)
        if entry is None:
            raise KeyError(f"no row in table for {self.on}={key!r}")
        values, cum = entry
        return rng.choices(values, cum_weights=cum)[0]


class TableDraw(Column):
    """``{sampler: table}``: a row of a weighted CSV table, optionally conditioned on earlier fields.

    Each combination of the ``given`` values is its own distribution (rows grouped once, at build).
    Under ``quotas: {NAME: table}`` the plan fixes the row (exact counts); otherwise it is drawn by
    weight from the slot's own stream. The value is one cell (``value:``) or the row's cells as
    fields merged into the record.
    """

    def __init__(self, name: str, spec: TableSampler, table: Table) -> None:
        super().__init__(name, spec.emit)
        self.merge = spec.value is None
        self.table = table
        weights = table.weights(spec.weight)
        given_cols = [table.col(c) for c in spec.given]
        self.given_fields = list(spec.given.values())
        skip = {table.col(spec.weight), *given_cols}
        self.cells = [table.col(spec.value)] if spec.value else [i for i in range(len(table.columns)) if i not in skip]
        self.names = [table.columns[i] for i in self.cells]
        groups: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}
        for idx, row in enumerate(table.rows):
            key = tuple(row[i] for i in given_cols)
            rows, cum = groups.setdefault(key, ([], []))
            rows.append(idx)
            cum.append((cum[-1] if cum else 0.0) + weights[idx])
        self.groups = {k: v for k, v in groups.items() if v[1][-1] > 0}

    def value_of(self, idx: int) -> Any:
        row = self.table.rows[idx]
        if not self.merge:
            return row[self.cells[0]]
        return {n: row[i] for n, i in zip(self.names, self.cells, strict=True)}

    def evaluate_slot(self, state: SlotState) -> None:
        # One uniform per row from the slot's own sub-seed, no Mersenne Twister to seed: a table
        # draw is one bisection, and personas draw five of them per slot.
        label = "table:" + self.name
        for k, row in enumerate(state.rows):
            row[self.name] = self.evaluate_row(state, row, sub_seed(state.seed, f"{label}:{k}") / 2.0**64)

    def evaluate_row(self, state: SlotState, row: dict[str, Any], rng: Any) -> Any:
        if self.name in state.stratum:  # a quota fixed the row: exact counts
            return self.value_of(int(state.stratum[self.name]))
        key = tuple(str(field_value(row, f)) for f in self.given_fields)
        group = self.groups.get(key)
        if group is None:
            given = ", ".join(f"{f}={v!r}" for f, v in zip(self.given_fields, key, strict=True))
            raise KeyError(f"{self.table.path} has no row (with weight > 0) for {given}")
        rows, cum = group
        u = rng if isinstance(rng, float) else rng.random()
        return self.value_of(rows[min(bisect_right(cum, u * cum[-1]), len(rows) - 1)])
