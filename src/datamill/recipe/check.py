"""Whole-recipe checks: column names, the column DAG, templates, generators, quotas, cycles.

Each check raises :class:`RecipeError` through the recipe's locator, so the message points at
the line that holds the mistake.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import jinja2.meta

from datamill.recipe.model import (
    COLUMN_PATTERN,
    RESERVED_COLUMNS,
    CategoricalSampler,
    ConditionalSampler,
    ExpressionColumn,
    GeneratorColumn,
    JudgeColumn,
    LLMColumn,
    ModelSpec,
    Recipe,
    TableSampler,
    TemplateColumn,
    ValidateColumn,
)
from datamill.recipe.sandbox import JINJA, unsafe_reason
from datamill.recipe.trust import check_code, check_key_host

if TYPE_CHECKING:
    from datamill.recipe.loader import LoadedRecipe

# Names a template or expression may use besides columns.
CONTEXT_NAMES = frozenset({"params", "cycle", "slot", "plan"})


def template_source(col: ExpressionColumn | TemplateColumn) -> str:
    """The Jinja2 source a column renders (an expression becomes ``{{ expr }}``)."""
    return "{{ " + col.expr + " }}" if isinstance(col, ExpressionColumn) else col.template


def llm_templates(col: LLMColumn) -> dict[str, str]:
    """The Jinja2 templates of an LLM column, by field (none for a judge: its prompt is built in Python)."""
    if isinstance(col, JudgeColumn):
        return {}
    out = {"prompt": col.llm.prompt}
    if col.llm.system is not None:
        out["system"] = col.llm.system
    return out


def column_model(recipe: Recipe, col: LLMColumn) -> ModelSpec:
    """The model an LLM column uses: the recipe's model block with the column's override on top."""
    base = recipe.model.model_dump(exclude_unset=True) if recipe.model is not None else {}
    return ModelSpec.model_validate({**base, **(col.llm.model or {})})


def planner_model(recipe: Recipe) -> ModelSpec:
    """The planner's model: the recipe's model block with the planner's override on top."""
    base = recipe.model.model_dump(exclude_unset=True) if recipe.model is not None else {}
    return ModelSpec.model_validate({**base, **((recipe.planner.model if recipe.planner else None) or {})})


def resolve_schema(spec: dict[str, Any] | str | None, base_dir: Path) -> dict[str, Any] | None:
    """A JSON schema from a recipe: given inline, or ``module:Model`` of a pydantic model."""
    if spec is None or isinstance(spec, dict):
        return spec
    model = resolve_generator(spec, base_dir)
    schema_fn = getattr(model, "model_json_schema", None)
    if schema_fn is None:
        raise LookupError(f"{spec!r} is not a pydantic model")
    return dict(schema_fn())


def dependencies(recipe: Recipe, name: str) -> list[str]:
    """Columns that column ``name`` reads, in declared order."""
    col = recipe.columns[name]
    names = list(recipe.columns)
    if isinstance(col, ConditionalSampler):
        return [col.on]
    if isinstance(col, TableSampler):
        given = {f.split(".", 1)[0] for f in col.given.values()}
        return [n for n in names if n in given]
    if isinstance(col, (ExpressionColumn, TemplateColumn)):
        used = jinja2.meta.find_undeclared_variables(JINJA.parse(template_source(col)))
        return [n for n in names if n in used]
    if isinstance(col, (JudgeColumn, ValidateColumn)):
        refs = judge_fields(recipe, name) if isinstance(col, JudgeColumn) else [col.field]
        roots = {field_root(ref, names) for ref in refs}
        return [n for n in names if n in roots]
    if isinstance(col, LLMColumn):
        used = set()
        for src in llm_templates(col).values():
            used |= jinja2.meta.find_undeclared_variables(JINJA.parse(src))
        return [n for n in names if n in used]
    if isinstance(col, GeneratorColumn):
        if col.inputs is not None:
            return list(col.inputs)
        return [n for n in names[: names.index(name)] if not isinstance(recipe.columns[n], GeneratorColumn)]
    return []


def field_root(ref: str, known: Sequence[str]) -> str | None:
    """The column (or source column) among ``known`` that a field reference reads, or None.

    A reference is a name, or ``name.key[.key...]`` into a dict-valued column (a generator's or a
    JSON LLM column's answer).
    """
    if ref in known:
        return ref
    head = ref.split(".", 1)[0]
    return head if "." in ref and head in known else None


def judge_fields(recipe: Recipe, name: str, inputs: Sequence[str] = ()) -> list[str]:
    """The fields judge column ``name`` shows its model: as named, or the source's columns and
    every emitted column declared above it."""
    col = recipe.columns[name]
    assert isinstance(col, JudgeColumn)
    if col.judge.fields is not None:
        return list(col.judge.fields)
    names = list(recipe.columns)
    return [*inputs, *(n for n in names[: names.index(name)] if recipe.columns[n].emit)]


def column_order(recipe: Recipe) -> list[str]:
    """Columns in evaluation order: dependencies first, declared order otherwise."""
    names = list(recipe.columns)
    deps = {n: dependencies(recipe, n) for n in names}
    done: set[str] = set()
    order: list[str] = []
    while len(order) < len(names):
        ready = next(n for n in names if n not in done and all(d in done for d in deps[n]))
        order.append(ready)
        done.add(ready)
    return order


def resolve_generator(spec: str, base_dir: Path) -> Any:
    """Import ``module:function`` (or ``path/to/file.py:function``) and return the function."""
    module_ref, func_name = spec.rsplit(":", 1)
    if module_ref.endswith(".py") or "/" in module_ref:
        path = (base_dir / module_ref).resolve()
        if not path.is_file():
            raise LookupError(f"no such file: {path}")
        mod_name = "datamill_recipe_" + re.sub(r"\W", "_", str(path))
        module = sys.modules.get(mod_name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(mod_name, path)
            if loader_spec is None or loader_spec.loader is None:
                raise LookupError(f"cannot import {path}")
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[mod_name] = module
            loader_spec.loader.exec_module(module)
    else:
        try:
            found = importlib.util.find_spec(module_ref)
        except (ImportError, ValueError):
            found = None
        if found is None:
            raise LookupError(f"no module named {module_ref!r}")
        module = importlib.import_module(module_ref)
    func = getattr(module, func_name, None)
    if not callable(func):
        raise LookupError(f"{module_ref!r} has no function {func_name!r}")
    return func


def check_recipe(loaded: LoadedRecipe) -> None:
    """Raise :class:`RecipeError` for the first whole-recipe mistake in ``loaded``."""
    recipe, loc = loaded.recipe, loaded.locator
    names = list(recipe.columns)
    for name in names:
        if not re.match(COLUMN_PATTERN, name):
            raise loc.error(("columns", name), "expected a column name of letters, digits and _", at_key=True)
        if name in RESERVED_COLUMNS:
            raise loc.error(("columns", name), f"{name!r} is reserved; choose another column name", at_key=True)

    inputs = loaded.source.columns if loaded.source is not None else ()
    for name in names:
        if name in inputs:
            raise loc.error(("columns", name), f"{name!r} is a column of the source; new columns need new names",
                            at_key=True)  # fmt: skip
    for name in inputs:
        if name == "sample_id" and recipe.source is not None and recipe.source.key != "sample_id":
            raise loc.error(("source", "path"), "the source has a sample_id column; set source.key: sample_id")
    known = ", ".join([*inputs, *names])
    for name, col in recipe.columns.items():
        where = ("columns", name)
        if isinstance(col, (ExpressionColumn, TemplateColumn)):
            field = "expr" if isinstance(col, ExpressionColumn) else "template"
            _check_template(loaded, name, (*where, field), template_source(col), f"Jinja2 {field}")
        elif isinstance(col, JudgeColumn):
            refs = judge_fields(recipe, name, inputs)
            if not refs:
                raise loc.error((*where, "judge"), "nothing to judge: no column above it is emitted; "
                                "name the record's fields in fields: [...]", at_key=True)  # fmt: skip
            for i, ref in enumerate(refs):
                _check_field(loaded, name, (*where, "judge", "fields", i), ref, known)
            _check_llm(loaded, name, col, known)
        elif isinstance(col, LLMColumn):
            _check_llm(loaded, name, col, known)
        elif isinstance(col, ValidateColumn):
            _check_field(loaded, name, (*where, "field"), col.field, known)
            if col.dialect is not None and col.validate_ != "sql":
                raise loc.error((*where, "dialect"), f"only validate: sql takes a dialect, not {col.validate_}")
            if col.dialect is not None:
                from sqlglot.dialects.dialect import Dialect

                try:
                    Dialect.get_or_raise(col.dialect)
                except ValueError as exc:
                    raise loc.error((*where, "dialect"), f"{exc} Expected a sqlglot dialect, e.g. postgres") from None
        elif isinstance(col, TableSampler):
            for table_col, ref in col.given.items():
                root = ref.split(".", 1)[0]
                if root not in recipe.columns and root not in inputs:
                    raise loc.error((*where, "given", table_col), f"unknown field {ref!r}; expected one of: {known}")
                if root == name:
                    raise loc.error((*where, "given", table_col), f"column {name!r} cannot be conditioned on itself")
        elif isinstance(col, ConditionalSampler):
            if col.on not in recipe.columns:
                raise loc.error((*where, "on"), f"unknown column {col.on!r}; expected one of: {known}")
            if col.on == name:
                raise loc.error((*where, "on"), f"column {name!r} cannot be conditional on itself")
            parent = recipe.columns[col.on]
            if isinstance(parent, CategoricalSampler):
                missing = [v for v in parent.values if v not in col.table]
                if missing:
                    raise loc.error(
                        (*where, "table"), f"expected a row for every value of {col.on!r}; missing {missing[0]!r}"
                    )
                extra = [k for k in col.table if k not in parent.values]
                if extra:
                    raise loc.error(
                        (*where, "table", extra[0]), f"{extra[0]!r} is not a value of {col.on!r}", at_key=True
                    )
        elif isinstance(col, GeneratorColumn):
            for i, dep in enumerate(col.inputs or []):
                if dep not in recipe.columns:
                    raise loc.error((*where, "inputs", i), f"unknown column {dep!r}; expected one of: {known}")
            try:
                check_code(col.generator, loaded.base_dir)
                resolve_generator(col.generator, loaded.base_dir)
            except LookupError as exc:
                raise loc.error((*where, "generator"), str(exc)) from None
            except Exception as exc:  # importing user code can fail in any way
                raise loc.error((*where, "generator"), f"cannot import: {type(exc).__name__}: {exc}") from None

    _check_dag(loaded)
    _check_planner(loaded)
    _check_quotas(loaded)
    _check_cycles(loaded)
    _check_gate_files(loaded)


def _check_gate_files(loaded: LoadedRecipe) -> None:
    """Dashboard and safety gates' data files (tables, pattern packs, lexicons) must load."""
    from datamill.recipe.gatekinds import check_files

    for i, gate in enumerate(loaded.recipe.gates):
        if gate.dashboard is None and gate.safety is None:
            continue
        problem = check_files(gate, loaded.base_dir)
        if problem is not None:
            raise loaded.locator.error(("gates", i, problem[0]), problem[1])


def _parsed(loaded: LoadedRecipe, where: tuple[str, ...], src: str, what: str) -> Any:
    """The Jinja2 AST of ``src``, refused (with the line) if it does not parse or is unsafe."""
    loc = loaded.locator
    try:
        ast = JINJA.parse(src)
    except jinja2.TemplateSyntaxError as exc:
        raise loc.error(where, f"invalid {what}: {exc.message}") from None
    reason = unsafe_reason(ast)
    if reason is not None:
        raise loc.error(where, f"unsafe template: {reason}")
    return ast


def _check_template(loaded: LoadedRecipe, name: str, where: tuple[str, ...], src: str, what: str) -> None:
    """Jinja2 source of column ``name`` must parse and name only columns and context names."""
    recipe, loc = loaded.recipe, loaded.locator
    ast = _parsed(loaded, where, src, what)
    inputs = loaded.source.columns if loaded.source is not None else ()
    for var in sorted(jinja2.meta.find_undeclared_variables(ast)):
        if var == "plan" and recipe.planner is None and var not in recipe.columns:
            raise loc.error(where, "'plan' (the slot's category) exists only in recipes with a planner: block")
        if var not in recipe.columns and var not in CONTEXT_NAMES and var not in inputs:
            known = ", ".join([*inputs, *recipe.columns])
            raise loc.error(where, f"unknown column {var!r}; expected one of: {known}")
        if var == name:
            raise loc.error(where, f"column {name!r} refers to itself")


def _check_field(loaded: LoadedRecipe, name: str, where: tuple[str | int, ...], ref: str, known: str) -> None:
    """A judge's or validator's field must be another column, a source column, or a key of one."""
    inputs = loaded.source.columns if loaded.source is not None else ()
    root = field_root(ref, [*inputs, *loaded.recipe.columns])
    if root is None:
        raise loaded.locator.error(where, f"unknown field {ref!r}; expected one of: {known} (or COLUMN.KEY)")
    if root == name:
        raise loaded.locator.error(where, f"column {name!r} cannot read itself")


def _check_llm(loaded: LoadedRecipe, name: str, col: LLMColumn, known: str) -> None:
    import jsonschema
    from pydantic import ValidationError

    recipe, loc = loaded.recipe, loaded.locator
    kind = "judge" if isinstance(col, JudgeColumn) else "llm"  # where a judge's settings are written
    where = ("columns", name, kind)
    for field, src in llm_templates(col).items():
        _check_template(loaded, name, (*where, field), src, "Jinja2 template")
    try:
        model = column_model(recipe, col)
    except ValidationError as exc:
        err = exc.errors()[0]
        inner = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise loc.error((*where, "model", *err["loc"]), f"{inner + ': ' if inner else ''}{msg}") from None
    if model.max_cost_usd is not None and (model.price_prompt_per_1k is None or model.price_completion_per_1k is None):
        from datamill.llm.telemetry import PRICES

        if model.backend != "openai" or (model.model or "") not in PRICES:
            override = col.llm.model or {}
            at = (*where, "model", "max_cost_usd") if "max_cost_usd" in override else ("model", "max_cost_usd")
            raise loc.error(
                at,
                f"a cost budget needs prices: {model.model or model.backend!r} is not in the price table; "
                "set price_prompt_per_1k and price_completion_per_1k (USD per 1K tokens)",
            )
    if model.backend == "openai" and model.api_key_env and model.base_url:
        try:
            check_key_host(model.base_url, model.api_key_env)
        except LookupError as exc:
            override = col.llm.model or {}
            at = (*where, "model", "base_url") if "base_url" in override else ("model", "base_url")
            raise loc.error(at, str(exc)) from None
    try:
        if isinstance(col.llm.schema_, str):
            check_code(col.llm.schema_, loaded.base_dir)
        schema = resolve_schema(col.llm.schema_, loaded.base_dir)
        if schema is not None:
            jsonschema.validators.validator_for(schema).check_schema(schema)
    except LookupError as exc:
        raise loc.error((*where, "schema"), str(exc)) from None
    except jsonschema.SchemaError as exc:
        raise loc.error((*where, "schema"), f"not a valid JSON schema: {exc.message}") from None
    if recipe.output.part_size % col.llm.pack:
        raise loc.error(
            ("output", "part_size"),
            f"expected a multiple of columns.{name}.{kind}.pack ({col.llm.pack}), got {recipe.output.part_size}",
        )


def _check_dag(loaded: LoadedRecipe) -> None:
    recipe = loaded.recipe
    deps = {n: dependencies(recipe, n) for n in recipe.columns}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for d in deps[n]:
            if state.get(d) == 1:
                cycle = [*path[path.index(d) :], n, d] if d in path else [n, d]
                raise loaded.locator.error(("columns", d), "dependency cycle: " + " -> ".join(cycle), at_key=True)
            if d not in state:
                visit(d, [*path, n])
        state[n] = 2

    for n in recipe.columns:
        if n not in state:
            visit(n, [])


def _check_quotas(loaded: LoadedRecipe) -> None:
    recipe, loc = loaded.recipe, loaded.locator
    for col_name, weights in recipe.quotas.items():
        col = recipe.columns.get(col_name)
        if weights == "table":
            if not isinstance(col, TableSampler) or col.given:
                raise loc.error(("quotas", col_name), "quota 'table' needs a table sampler column without given:",
                                at_key=True)  # fmt: skip
            continue
        if not isinstance(col, CategoricalSampler):
            raise loc.error(("quotas", col_name), "expected the name of a categorical sampler column (or a table "
                            "sampler's, with: table)", at_key=True)  # fmt: skip
        for value, w in weights.items():
            if value not in col.values:
                raise loc.error(
                    ("quotas", col_name, value), f"{value!r} is not a value of column {col_name!r}", at_key=True
                )
            if w < 0:
                raise loc.error(("quotas", col_name, value), f"expected a weight >= 0, got {w}")
        if sum(weights.values()) <= 0:
            raise loc.error(("quotas", col_name), "expected at least one weight > 0")


def _check_cycles(loaded: LoadedRecipe) -> None:
    recipe, loc = loaded.recipe, loaded.locator
    lengths = {name: len(values) for name, values in recipe.cycles.items()}
    for name, n in lengths.items():
        if n == 0:
            raise loc.error(("cycles", name), "expected at least one value")
    if len(set(lengths.values())) > 1:
        first, n0 = next(iter(lengths.items()))
        name = next(k for k, v in lengths.items() if v != n0)
        raise loc.error(("cycles", name), f"expected {n0} values, as in cycles.{first}; got {lengths[name]}")


def _check_planner(loaded: LoadedRecipe) -> None:
    """A planner's prompt renders from params, size and hints; its plan is the only quota."""
    recipe, loc = loaded.recipe, loaded.locator
    if recipe.planner is None:
        return
    if recipe.quotas:
        raise loc.error(("quotas",), "a recipe with a planner gets its quotas from the plan; remove quotas:",
                        at_key=True)  # fmt: skip
    if recipe.cycles:
        raise loc.error(("cycles",), "a recipe with a planner cannot have cycles:", at_key=True)
    for field in ("prompt", "system"):
        src = getattr(recipe.planner, field)
        if src is None:
            continue
        where = ("planner", field)
        ast = _parsed(loaded, where, src, "Jinja2 template")
        unknown = sorted(jinja2.meta.find_undeclared_variables(ast) - {"params", "size", "hints", "max_categories"})
        if unknown:
            raise loc.error(where, f"unknown name {unknown[0]!r}; a planner prompt sees params, size, hints and "
                                   "max_categories")  # fmt: skip
    if recipe.planner.model is not None:
        try:
            model = planner_model(recipe)
        except Exception as exc:  # pydantic's message, one line
            raise loc.error(("planner", "model"), str(exc).splitlines()[-1].strip()) from None
        if model.backend == "openai" and model.api_key_env and model.base_url:
            try:
                check_key_host(model.base_url, model.api_key_env)
            except LookupError as exc:
                raise loc.error(("planner", "model", "base_url"), str(exc)) from None
