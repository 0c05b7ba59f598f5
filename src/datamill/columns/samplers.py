"""Sampler columns: categorical, integer, uniform, conditional."""

from __future__ import annotations

import itertools
import random
from typing import Any

from datamill.columns.base import Column, SlotState
from datamill.recipe.model import CategoricalSampler, ConditionalSampler, IntegerSampler, UniformSampler


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
