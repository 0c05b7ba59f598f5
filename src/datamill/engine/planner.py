"""The planner step of a recipe with ``planner:``: categories and exact counts, decided once per run.

Before any slot runs, the plan comes from one of three places, in this order:

1. the run dir's ``plan.json`` (a resume never re-plans; a ``--plan`` file that differs is refused);
2. a plan file the user gives (``--plan FILE``), validated with line-numbered errors;
3. the planner model: one request (cached in the run dir like any LLM request, so a kill after
   the reply and before ``plan.json`` costs nothing on resume), parsed against a JSON schema with
   repair prompts.

The plan is saved atomically as ``plan.json`` and travels with the recipe as ``params.plan``, so
the recipe hash covers it and every worker, shard and resume sees the same categories.
``planner.json``, written before the planner is asked, marks a run dir whose planning started.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import orjson

from datamill.errors import PlannerError, RunDirError, UsageError
from datamill.recipe import LoadedRecipe
from datamill.recipe.evalplan import EvalPlan, load_plan_file, parse_hints, slug
from datamill.store import atomic

PLAN_FILE = "plan.json"
MARKER = "planner.json"
LOCK = ".planner.lock"


def saved_plan(out: str | Path) -> dict[str, Any] | None:
    """The plan a run dir was made with, or None."""
    path = Path(out) / PLAN_FILE
    if not path.is_file():
        return None
    return dict(orjson.loads(path.read_bytes()))


def base_hash(loaded: LoadedRecipe) -> str:
    """The recipe's hash before planning, size aside (a plan file decides the size)."""
    from datamill.recipe.loader import recipe_hash

    params = {k: v for k, v in loaded.recipe.params.items() if k != "plan"}
    return recipe_hash(loaded.recipe.model_copy(update={"params": params, "size": 1}), loaded.source, loaded.tables)


def plan_schema(hints: list[tuple[str, int | None]], max_categories: int) -> dict[str, Any]:
    """What a planner reply must be: hinted names, when there are hints, and nothing else."""
    text = {"type": "string", "maxLength": 200}
    name: dict[str, Any] = {"enum": [h[0] for h in hints]} if hints else {"type": "string", "maxLength": 40}
    n = len(hints) or None
    return {
        "type": "object",
        "properties": {
            "categories": {
                "type": "array",
                "minItems": n or 1,
                "maxItems": n or max_categories,
                "items": {
                    "type": "object",
                    "properties": {
                        "name": name,
                        "description": {"type": "string", "maxLength": 300},
                        "count": {"type": "integer", "minimum": 1},
                        "example_inputs": {"type": "array", "items": text, "maxItems": 3},
                        "expectations": {"type": "array", "items": text, "maxItems": 3},
                    },
                    "required": ["name", "description", "count", "example_inputs", "expectations"],
                },
            }
        },
        "required": ["categories"],
    }


def resolve_plan(
    loaded: LoadedRecipe,
    out: str | Path,
    plan: str | Path | dict[str, Any] | None = None,
    *,
    size_given: bool = False,
    use_cache: bool = True,
) -> LoadedRecipe:
    """``loaded`` with its plan in ``params.plan`` and its size the plan's total (see the module doc)."""
    recipe = loaded.recipe
    if recipe.planner is None:
        if plan is not None:
            raise UsageError(f"--plan: recipe {recipe.name!r} has no planner: block")
        return loaded
    out = Path(out)
    hints = parse_hints(str(recipe.params.get("categories") or ""))
    marker = out / MARKER
    if out.exists() and not marker.is_file() and (not out.is_dir() or any(p.name != LOCK for p in out.iterdir())):
        raise RunDirError(f"{out}: exists and is not a run dir of recipe {recipe.name!r} (no {MARKER}); use another "
                          "--out")  # fmt: skip
    if marker.is_file() and orjson.loads(marker.read_bytes()).get("base_hash") != base_hash(loaded):
        raise RunDirError(
            f"{out}: was planned for recipe {recipe.name!r} with other parameters (description, hints, seed or "
            "model); use another --out or remove the dir"
        )
    given = _given(plan, hints) if plan is not None else None
    with _planning_lock(out):  # shards started together: one plans, the others read its plan
        return _resolve(loaded, out, given, hints, size_given, use_cache)


@contextmanager
def _planning_lock(out: Path) -> Iterator[None]:
    if saved_plan(out) is not None:
        yield  # planned: nothing to write, nothing to wait for
        return
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    except BaseException:
        if created and all(p.name == LOCK for p in out.iterdir()):  # refused before anything was written
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        os.close(fd)


def _resolve(
    loaded: LoadedRecipe,
    out: Path,
    given: EvalPlan | None,
    hints: list[tuple[str, int | None]],
    size_given: bool,
    use_cache: bool,
) -> LoadedRecipe:
    recipe = loaded.recipe
    saved = saved_plan(out)
    if given is not None and saved is not None and given.normal() != saved:
        raise UsageError(
            f"--plan: differs from the plan {out / PLAN_FILE} this run was made with; a resume never re-plans: "
            "run without --plan to resume, or use another --out"
        )
    if given is not None:
        chosen = given
    elif saved is not None:
        chosen = EvalPlan.model_validate(saved)
    else:
        _check_hint_counts(hints, recipe.size)
        chosen = _ask(loaded, out, hints, use_cache)
    if (given is not None or saved is not None) and size_given and recipe.size != chosen.total:
        raise UsageError(f"--size {recipe.size}: the plan's counts sum to {chosen.total}; drop --size or fix the plan")
    if saved is None:
        out.mkdir(parents=True, exist_ok=True)
        _mark(out, loaded)
        atomic.write_bytes(out / PLAN_FILE, orjson.dumps(chosen.normal(), option=orjson.OPT_INDENT_2))
    return loaded.with_overrides(size=chosen.total, params={"plan": chosen.normal()})


def _given(plan: str | Path | dict[str, Any], hints: list[tuple[str, int | None]]) -> EvalPlan:
    if isinstance(plan, dict):
        try:
            chosen = EvalPlan.model_validate(plan)
        except ValueError as exc:
            raise UsageError(f"plan: {str(exc).splitlines()[-1].strip()}") from None
    else:
        chosen = load_plan_file(plan)
    if hints:
        chosen = chosen.only([h[0] for h in hints], "--param categories")
    return chosen


def _check_hint_counts(hints: list[tuple[str, int | None]], size: int) -> None:
    fixed = sum(n for _, n in hints if n is not None)
    free = sum(1 for _, n in hints if n is None)
    if fixed > size or (hints and not free and fixed != size) or (free and size - fixed < free):
        raise UsageError(
            f"--param categories: the counts given sum to {fixed}, which does not leave every category at least one "
            f"of --size {size}"
        )


def _mark(out: Path, loaded: LoadedRecipe) -> None:
    if not (out / MARKER).is_file():
        marker = {"recipe_name": loaded.recipe.name, "base_hash": base_hash(loaded)}
        atomic.write_bytes(out / MARKER, orjson.dumps(marker, option=orjson.OPT_INDENT_2))


def _ask(loaded: LoadedRecipe, out: Path, hints: list[tuple[str, int | None]], use_cache: bool) -> EvalPlan:
    """One planner request (cached in the run dir), its reply made into a plan of exactly ``size``."""
    from datamill.columns import RunContext, SlotState
    from datamill.columns.llm import LLM, preflight
    from datamill.recipe.check import planner_model
    from datamill.recipe.model import LLMColumn
    from datamill.seeds import sub_seed

    recipe = loaded.recipe
    spec = recipe.planner
    assert spec is not None
    model = planner_model(recipe)
    preflight(model)
    out.mkdir(parents=True, exist_ok=True)
    _mark(out, loaded)
    schema = plan_schema(hints, spec.max_categories)
    column = LLMColumn.model_validate({"llm": {
        "prompt": spec.prompt, "system": spec.system, "schema": schema, "temperature": spec.temperature,
        "max_tokens": spec.max_tokens, "max_repairs": spec.max_repairs}})  # fmt: skip
    hint_text = ", ".join(name if n is None else f"{name} ({n} cases)" for name, n in hints)
    state = SlotState(
        slot=0,
        attempt=0,
        seed=sub_seed(recipe.seed, "planner"),
        slot_id=f"{recipe.name}:{recipe.seed}:planner",
        stratum={},
        cycle=None,
        cycle_params={},
        params=dict(recipe.params),
        size=recipe.size,
        rows=[{"size": recipe.size, "hints": hint_text, "max_categories": spec.max_categories}],
    )
    llm = LLM("planner", column, model, schema, RunContext(out, "planner", use_cache))
    try:
        llm.evaluate([state])
    finally:
        llm.close()
    if state.failed is not None:
        raise PlannerError(f"{state.failed}; pass a plan with --plan FILE, or another planner model")
    return plan_from_reply(state.rows[0]["planner"], hints, recipe.size, spec.max_categories)


def plan_from_reply(
    reply: dict[str, Any], hints: list[tuple[str, int | None]], size: int, max_categories: int
) -> EvalPlan:
    """A planner's reply made exact: names normalised and distinct, hinted counts kept, the others
    scaled so that the counts sum to ``size`` (largest remainder; a category scaled to 0 is left out)."""
    from datamill.engine.plan import largest_remainder

    entries: dict[str, dict[str, Any]] = {}
    for raw in reply.get("categories") or []:
        name = slug(str(raw.get("name") or ""))
        if name in entries:
            continue
        entries[name] = {
            "name": name,
            "description": str(raw.get("description") or "").strip() or name.replace("_", " "),
            "count": max(1, int(raw.get("count") or 1)),
            "example_inputs": raw.get("example_inputs") or [],
            "expectations": raw.get("expectations") or [],
        }
    if hints:
        missing = [name for name, _ in hints if name not in entries]
        if missing:
            raise PlannerError(f"planner: the reply has no category {missing[0]!r} (asked for: "
                               f"{', '.join(h[0] for h in hints)})")  # fmt: skip
        chosen = [entries[name] for name, _ in hints]
        fixed = {name: n for name, n in hints if n is not None}
    else:
        chosen = list(entries.values())[:max_categories]
        fixed = {}
    if not chosen:
        raise PlannerError("planner: the reply has no categories")
    free = [c for c in chosen if c["name"] not in fixed]
    for c in chosen:
        if c["name"] in fixed:
            c["count"] = fixed[c["name"]]
    if free:
        left = size - sum(fixed.values())
        counts = largest_remainder(left, [Fraction(c["count"]) for c in free])
        for c, n in zip(free, counts, strict=True):
            c["count"] = n
    plan = EvalPlan.model_validate({"categories": [c for c in chosen if c["count"] > 0]})
    assert plan.total == size, (plan.total, size)
    return plan
