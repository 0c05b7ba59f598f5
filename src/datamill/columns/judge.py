"""Judge columns: an LLM column that scores a record by a rubric, ``{"score": int, "reason": str}``.

Everything but the prompt is the LLM column's: the schema-structured answer (score bounded by the
scale), the cache, packing, repairs and the run-wide limits. The prompt is built here, in Python,
from the rubric and the record's fields: a rubric is prose, not a template, so braces in it are
sent as written, and values that are not strings are shown as JSON rather than Python reprs.
The rubric lives in the system prompt, so packed records share it once per request.
"""

from __future__ import annotations

from typing import Any

import orjson

from datamill.columns.base import SlotState
from datamill.columns.fields import MISSING, field_value
from datamill.columns.llm import LLM, RunContext
from datamill.recipe.model import JudgeColumn, JudgeColumnSpec, ModelSpec

DEFAULT_SYSTEM = "You are a strict, fair judge of dataset records."


def judge_system(spec: JudgeColumnSpec) -> str:
    """The judge's system prompt: persona, rubric, and what to answer."""
    low, high = spec.scale
    return (
        f"{spec.system or DEFAULT_SYSTEM}\n\nRubric: {spec.rubric}\n\n"
        f"Score the record from {low} (worst) to {high} (best) by this rubric, "
        "and give the reason for the score in one short sentence."
    )


def _shown(value: Any) -> str:
    if value is MISSING:
        return "(missing)"
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=str).decode()


def judge_prompt(fields: list[str], row: dict[str, Any]) -> str:
    """The user prompt for one record: each field's name and value."""
    parts = [f"{ref}:\n{_shown(field_value(row, ref))}" for ref in fields]
    return "Judge this record.\n\n" + "\n\n".join(parts)


class Judge(LLM):
    """A ``judge`` column (see the module docstring); ``fields`` as resolved at load time."""

    def __init__(
        self,
        name: str,
        spec: JudgeColumn,
        model: ModelSpec,
        fields: list[str],
        ctx: RunContext | None,
        slots: dict[str, int] | None = None,
    ) -> None:
        schema = spec.llm.schema_
        assert isinstance(schema, dict)  # JudgeColumn derives it from the scale
        super().__init__(name, spec, model, schema, ctx, slots)
        self.fields = fields
        self.system = judge_system(spec.judge)

    def _render(self, state: SlotState, row: dict[str, Any]) -> tuple[str | None, str]:
        return self.system, judge_prompt(self.fields, row)
