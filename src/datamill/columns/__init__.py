"""Columns: samplers, expressions, templates, generators, LLM, judge and validate columns, built from recipe specs."""

from __future__ import annotations

from datamill.columns.base import Column, SlotState
from datamill.columns.expressions import Expression, Template
from datamill.columns.generators import Generator, GeneratorContext
from datamill.columns.judge import Judge
from datamill.columns.llm import LLM, RunContext, recipe_model_slots
from datamill.columns.samplers import Categorical, Conditional, Integer, TableDraw, Uniform
from datamill.columns.validate import Validate
from datamill.recipe import LoadedRecipe, column_order
from datamill.recipe.check import column_model, dependencies, judge_fields, resolve_schema
from datamill.recipe.model import (
    CategoricalSampler,
    ConditionalSampler,
    ExpressionColumn,
    GeneratorColumn,
    IntegerSampler,
    JudgeColumn,
    LLMColumn,
    TableSampler,
    TemplateColumn,
    UniformSampler,
    ValidateColumn,
)

__all__ = ["Column", "GeneratorContext", "RunContext", "SlotState", "build_columns"]


def build_columns(loaded: LoadedRecipe, ctx: RunContext | None = None) -> list[Column]:
    """The recipe's columns, ready to evaluate, in dependency order."""
    recipe = loaded.recipe
    slots = recipe_model_slots(recipe)
    out: list[Column] = []
    for name in column_order(recipe):
        spec = recipe.columns[name]
        col: Column
        if isinstance(spec, CategoricalSampler):
            col = Categorical(name, spec)
        elif isinstance(spec, IntegerSampler):
            col = Integer(name, spec)
        elif isinstance(spec, UniformSampler):
            col = Uniform(name, spec)
        elif isinstance(spec, ConditionalSampler):
            col = Conditional(name, spec)
        elif isinstance(spec, TableSampler):
            col = TableDraw(name, spec, loaded.tables[spec.table])
        elif isinstance(spec, ExpressionColumn):
            col = Expression(name, spec)
        elif isinstance(spec, TemplateColumn):
            col = Template(name, spec)
        elif isinstance(spec, GeneratorColumn):
            col = Generator(name, spec, loaded.base_dir, dependencies(recipe, name))
        elif isinstance(spec, ValidateColumn):
            col = Validate(name, spec)
        elif isinstance(spec, JudgeColumn):  # before LLMColumn: a judge is one, with its own prompt
            inputs = loaded.source.columns if loaded.source is not None else ()
            col = Judge(name, spec, column_model(recipe, spec), judge_fields(recipe, name, inputs), ctx, slots)
        elif isinstance(spec, LLMColumn):
            schema = resolve_schema(spec.llm.schema_, loaded.base_dir)
            col = LLM(name, spec, column_model(recipe, spec), schema, ctx, slots)
        else:  # pragma: no cover - the model admits no other kind
            raise TypeError(f"unknown column kind {type(spec).__name__}")
        out.append(col)
    return out
