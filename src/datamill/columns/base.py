"""The column interface: one hook per column, shared slot bookkeeping here once.

A slot is evaluated as a :class:`SlotState`: its rows (one at first; a generator column may
expand it to many), its context (seed, stratum, cycle), and whether it failed or was dropped.
A column implements :meth:`Column.evaluate_row`; the batch loop, error capture and per-column
random streams live in the base class, so no column can let one slot's error escape to its
neighbours or draw randomness from anywhere but its own slot.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from datamill.recipe.sandbox import SecurityError, render_guard
from datamill.seeds import sub_seed


@dataclass
class SlotState:
    """Everything known about one slot while its columns are evaluated."""

    slot: int
    attempt: int
    seed: int
    slot_id: str
    stratum: dict[str, Any]
    cycle: int | None
    cycle_params: dict[str, Any]
    params: dict[str, Any]
    size: int = 0  # slots in the plan
    rows: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    inputs: tuple[str, ...] = ()  # the source row's columns (rows start with them), in input order
    failed: str | None = None
    dropped: str | None = None
    plan: dict[str, Any] | None = None  # the slot's category of a planner recipe's plan

    def rng(self, label: str) -> random.Random:
        """A random stream that belongs to this slot and ``label`` (a column) alone."""
        return random.Random(sub_seed(self.seed, label))

    def template_context(self, row: dict[str, Any]) -> dict[str, Any]:
        context = {**row, "params": self.params, "cycle": self.cycle_params, "slot": self.slot}
        if self.plan is not None:
            context["plan"] = self.plan
        return context


class Column(ABC):
    """One field of a record, evaluated slot by slot."""

    def __init__(self, name: str, emit: bool = True) -> None:
        self.name = name
        self.emit = emit

    def evaluate(self, batch: Sequence[SlotState]) -> None:
        """Fill this column in every live slot of ``batch``; a slot whose evaluation raises fails alone."""
        for state in batch:
            if state.failed is not None or state.dropped is not None:
                continue
            try:
                self.evaluate_slot(state)
            except SecurityError as exc:  # a recipe reaching for the interpreter is bad input, not bad luck
                raise render_guard(self.name, exc) from None
            except Exception as exc:  # a column's bug or bad data fails its slot, never the run
                state.failed = f"{self.name}: {type(exc).__name__}: {exc}"

    async def aevaluate(self, batch: Sequence[SlotState]) -> None:
        """:meth:`evaluate` on a running event loop: columns that wait on I/O override it."""
        self.evaluate(batch)

    uses_rng = True  # False: the column never draws (expressions, templates, checks), so no stream is seeded

    def evaluate_slot(self, state: SlotState) -> None:
        rng = state.rng(self.name) if self.uses_rng else None
        for row in state.rows:
            row[self.name] = self.evaluate_row(state, row, rng)  # type: ignore[arg-type]

    def close(self) -> None:  # noqa: B027 - a hook with a default, not an abstract method
        """Release what the column holds (connections, event loops); the default holds nothing."""

    @abstractmethod
    def evaluate_row(self, state: SlotState, row: dict[str, Any], rng: random.Random) -> Any:
        """The value of this column for one row of a slot."""
