"""Slot execution: from slot indices to records, deterministically.

A slot's records depend only on the recipe, the slot index and the attempt: the seed comes from
:func:`datamill.seeds.slot_seed`, each column draws from its own stream of it, and records are
built in declared column order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from datamill.columns import Column, RunContext, SlotState, build_columns
from datamill.columns.generators import Generator
from datamill.columns.llm import LLM
from datamill.engine.plan import Plan
from datamill.errors import RecipeError
from datamill.recipe import LoadedRecipe
from datamill.recipe.model import ExpressionColumn, LLMColumn, TemplateColumn
from datamill.recipe.sandbox import UnsafeTemplate
from datamill.seeds import key_seed, parse_sample_id, sample_id, slot_seed
from datamill.store.source import BadRow, Source


@dataclass
class SlotOutcome:
    """How one slot ended: records (maybe none), or failed/dropped with a reason."""

    slot: int
    records: list[dict[str, Any]] = field(default_factory=list)
    failed: str | None = None
    dropped: str | None = None


class SlotRunner:
    """Evaluates a compiled recipe one batch of slots at a time."""

    def __init__(self, loaded: LoadedRecipe, ctx: RunContext | None = None) -> None:
        self.loaded = loaded
        self.recipe = loaded.recipe
        self.plan = Plan(self.recipe, loaded.tables)
        self.columns: list[Column] = build_columns(loaded, ctx)
        # Rows as slots: row i of the source is slot i; its columns come first in every record.
        self.source = Source(loaded.source) if loaded.source is not None else None
        self.key = self.recipe.source.key if self.recipe.source is not None else None
        # One event loop for every LLM column, so requests of several ranges can share it (stream).
        llm_columns = [c for c in self.columns if isinstance(c, LLM)]
        self.loop: asyncio.AbstractEventLoop | None = None
        if llm_columns:
            self.loop = loop = asyncio.new_event_loop()
            for c in llm_columns:
                c.bind_loop(loop)
        # LLM columns answer a whole part range concurrently; CPU columns go 64 slots at a time.
        self.batch_slots = self.recipe.output.part_size if llm_columns else 64
        by_name = {c.name: c for c in self.columns}
        # Output follows declared order; a generator's dict is merged in at its place.
        self._emit = [
            (name, isinstance(by_name[name], Generator) or getattr(by_name[name], "merge", False))
            for name in self.recipe.columns
            if by_name[name].emit
        ]

    def state(self, slot: int, attempt: int = 0, row: dict[str, Any] | BadRow | None = None) -> SlotState:
        """The state of ``slot`` before its columns run; ``row`` is its source row, if any."""
        cyc = self.plan.cycle(slot)
        seed = slot_seed(self.recipe.seed, slot, attempt)
        if self.key is not None and isinstance(row, dict):
            # Keyed rows draw from their key, so a row keeps its samples when unrelated rows move.
            seed = key_seed(self.recipe.seed, str(row[self.key]), attempt)
        state = SlotState(
            slot=slot,
            attempt=attempt,
            seed=seed,
            slot_id=f"{self.recipe.name}:{self.recipe.seed}:{slot}",
            stratum=self.plan.stratum(slot),
            cycle=None if cyc is None else cyc[0],
            cycle_params={} if cyc is None else cyc[1],
            params=dict(self.recipe.params),
            size=self.recipe.size,
            plan=self.plan.category(slot),
        )
        if isinstance(row, BadRow):
            state.failed = f"source: {row.reason}"
        elif row is not None:
            state.rows = [dict(row)]
            state.inputs = tuple(row)
        return state

    def states(self, slots: Sequence[int], attempt: int = 0) -> list[SlotState]:
        """States of ``slots`` (ascending), each with its source row."""
        if self.source is None or not slots:
            return [self.state(i, attempt) for i in slots]
        lo, hi = slots[0], slots[-1] + 1
        wanted = set(slots) if hi - lo != len(slots) else None
        rows = self.source.rows(lo, hi)
        return [self.state(i, attempt, row) for i, row in zip(range(lo, hi), rows, strict=True)
                if wanted is None or i in wanted]  # fmt: skip

    def sample_ids(self, start: int, end: int) -> dict[str, int] | None:
        """Each keyed sample_id of slots ``[start, end)`` and its slot; None when ids name their slot."""
        if self.source is None or self.key is None:
            return None
        return {str(r[self.key]): i for i, r in zip(range(start, end), self.source.rows(start, end), strict=True)
                if isinstance(r, dict)}  # fmt: skip

    def slot_of(self, sid: str, ids: dict[str, int] | None) -> int:
        """The slot a record's sample_id belongs to (``ids`` from :meth:`sample_ids` of its part)."""
        if ids is None:
            return parse_sample_id(sid)[2]
        if sid in ids:
            return ids[sid]
        return ids[sid.rsplit("#", 1)[0]]

    def run(self, slots: Sequence[int], attempt: int = 0) -> list[SlotOutcome]:
        """Run ``slots`` (ascending) at ``attempt`` and return their outcomes in the order given."""
        batch = self.states(slots, attempt)
        try:
            for col in self.columns:
                col.evaluate(batch)
        except UnsafeTemplate as exc:
            raise self._where(exc) from None
        return [self._outcome(s) for s in batch]

    async def arun(self, slots: Sequence[int], attempt: int = 0) -> list[SlotOutcome]:
        """:meth:`run` on the runner's event loop, so other ranges' requests flow meanwhile."""
        batch = self.states(slots, attempt)
        try:
            for col in self.columns:
                await col.aevaluate(batch)
        except UnsafeTemplate as exc:
            raise self._where(exc) from None
        return [self._outcome(s) for s in batch]

    def _where(self, exc: UnsafeTemplate) -> RecipeError:
        """The recipe line of the template that reached for the interpreter at render time."""
        spec = self.recipe.columns.get(exc.column)
        field: tuple[str, ...] = ()
        if isinstance(spec, TemplateColumn):
            field = ("template",)
        elif isinstance(spec, ExpressionColumn):
            field = ("expr",)
        elif isinstance(spec, LLMColumn):
            field = ("llm", "prompt")
        return self.loaded.locator.error(("columns", exc.column, *field), exc.message)

    def sample(self, slots: Sequence[int], names: Sequence[str]) -> list[dict[str, Any]]:
        """Only the named columns (and what they depend on) of ``slots`` at attempt 0.

        Cheap previews for planning (e.g. golden-set stratification) that never run the
        columns they do not need, such as LLM columns.
        """
        from datamill.recipe.check import dependencies

        need: set[str] = set()
        todo = list(names)
        while todo:
            n = todo.pop()
            if n in need:
                continue
            if n not in self.recipe.columns:
                raise KeyError(n)
            need.add(n)
            todo.extend(dependencies(self.recipe, n))
        batch = self.states(sorted(slots))
        by_slot = {s.slot: s for s in batch}
        batch = [by_slot[i] for i in slots]
        for col in self.columns:
            if col.name in need:
                col.evaluate(batch)
        return [{n: (s.rows[0].get(n) if s.rows else None) for n in names} for s in batch]

    def close(self) -> None:
        for col in self.columns:
            col.close()
        if self.loop is not None:
            self.loop.close()
            self.loop = None

    def _outcome(self, state: SlotState) -> SlotOutcome:
        if state.failed is not None:
            return SlotOutcome(state.slot, failed=state.failed)
        if state.dropped is not None:
            return SlotOutcome(state.slot, dropped=state.dropped)
        name, seed = self.recipe.name, self.recipe.seed
        records = []
        for k, row in enumerate(state.rows):
            if self.key is not None:
                key = str(row[self.key])
                rec: dict[str, Any] = {"sample_id": key if k == 0 else f"{key}#{k}"}
            else:
                rec = {"sample_id": sample_id(name, seed, state.slot, k)}
            for col in state.inputs:
                rec[col] = row[col]
            for col, merge in self._emit:
                value = row[col]
                if merge and isinstance(value, dict):
                    rec.update(value)
                else:
                    rec[col] = value
            records.append(rec)
        return SlotOutcome(state.slot, records)
