"""Expression and template columns: Jinja2 over earlier columns, compiled once."""

from __future__ import annotations

import random
from typing import Any

from datamill.columns.base import Column, SlotState
from datamill.recipe.check import JINJA
from datamill.recipe.model import ExpressionColumn, TemplateColumn


class Expression(Column):
    uses_rng = False

    def __init__(self, name: str, spec: ExpressionColumn) -> None:
        super().__init__(name, spec.emit)
        self._fn = JINJA.compile_expression(spec.expr, undefined_to_none=False)

    def evaluate_row(self, state: SlotState, row: dict[str, Any], rng: random.Random) -> Any:
        return self._fn(**state.template_context(row))


class Template(Column):
    uses_rng = False

    def __init__(self, name: str, spec: TemplateColumn) -> None:
        super().__init__(name, spec.emit)
        self._tpl = JINJA.from_string(spec.template)

    def evaluate_row(self, state: SlotState, row: dict[str, Any], rng: random.Random) -> Any:
        return self._tpl.render(**state.template_context(row))
