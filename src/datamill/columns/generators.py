"""Generator columns: Python functions that yield zero or more records per slot.

The function receives a :class:`GeneratorContext` and yields dicts (or plain values). Each item
becomes one row of the slot; its dict is stored under the column's name and merged into the
record when the column is emitted. A generator that cannot produce a slot calls
``ctx.drop(reason)``: the slot ends done with no records, and the reason is counted.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datamill.columns.base import Column, SlotState
from datamill.recipe.check import resolve_generator
from datamill.recipe.model import GeneratorColumn
from datamill.seeds import sub_seed


@dataclass
class GeneratorContext:
    """What a generator may know about its slot. ``rng`` is its only source of randomness."""

    slot: int
    attempt: int
    seed: int
    slot_id: str
    rng_label: str
    params: dict[str, Any]
    cycle: int | None
    cycle_params: dict[str, Any]
    inputs: dict[str, Any]
    size: int = 0  # slots in the plan
    dropped: str | None = field(default=None)

    _rng: random.Random | None = field(default=None, repr=False)

    @property
    def rng(self) -> random.Random:
        """This generator's stream of the slot, seeded on first use (one per slot, shared by its rows)."""
        if self._rng is None:
            self._rng = random.Random(sub_seed(self.seed, self.rng_label))
        return self._rng

    def drop(self, reason: str) -> None:
        """Give up this slot on purpose: no records, counted under ``reason``."""
        self.dropped = reason


GeneratorFn = Callable[[GeneratorContext], Iterable[Any]]


class Generator(Column):
    def __init__(self, name: str, spec: GeneratorColumn, base_dir: Path, inputs: list[str]) -> None:
        super().__init__(name, spec.emit)
        self.fn: GeneratorFn = resolve_generator(spec.generator, base_dir)
        self.params = dict(spec.params)
        self.inputs = inputs

    def evaluate_slot(self, state: SlotState) -> None:
        params = {**state.params, **self.params}
        rows: list[dict[str, Any]] = []
        shared: random.Random | None = None
        for row in state.rows:
            ctx = GeneratorContext(
                slot=state.slot,
                attempt=state.attempt,
                seed=state.seed,
                slot_id=state.slot_id,
                rng_label=self.name,
                _rng=shared,
                params=params,
                cycle=state.cycle,
                cycle_params=state.cycle_params,
                inputs={k: row[k] for k in self.inputs},
                size=state.size,
            )
            produced = list(self.fn(ctx))  # a slot's records are all-or-nothing
            shared = ctx._rng  # the rows of one slot share one stream, as before
            if ctx.dropped is not None:
                state.dropped = ctx.dropped
                state.rows = []
                return
            for item in produced:
                new = dict(row)
                new[self.name] = item
                rows.append(new)
        state.rows = rows

    def evaluate_row(self, state: SlotState, row: dict[str, Any], rng: random.Random) -> Any:
        raise NotImplementedError("generators expand slots in evaluate_slot")
