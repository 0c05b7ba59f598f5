"""YAML -> :class:`Recipe`, with every error pointing at ``FILE:LINE:COL: field.path``.

ruamel.yaml's round-trip loader keeps the line and column of every key and value; a
:class:`Locator` walks that tree along a pydantic error location to find them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from datamill.errors import RecipeError, UsageError
from datamill.recipe.model import COLUMN_TAGS, Recipe
from datamill.recipe.tables import Table, TableError, check_weights, load_table
from datamill.store.source import SourceInfo, scan_cached

Loc = Sequence[Any]  # field names, list indices, and YAML keys of any scalar type

# Bumped when the meaning of a recipe changes in a way that changes its output.
RECIPE_HASH_VERSION = "1"


def format_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


class Locator:
    """Finds the 1-based line and column of a field path in a loaded YAML tree."""

    def __init__(self, file: str, tree: Any) -> None:
        self.file = file
        self.tree = tree

    def clean(self, loc: Loc) -> tuple[str | int, ...]:
        """Drop pydantic's union tags and internal markers from an error location."""
        node = self.tree
        out: list[str | int] = []
        for i, part in enumerate(loc):
            in_map = isinstance(node, CommentedMap) and part in node
            in_seq = isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node)
            if in_map and part in COLUMN_TAGS and i + 1 < len(loc) and not isinstance(node[part], (dict, list)):
                continue  # a union tag named like its scalar kind key (validate: json): what follows is a sibling
            if in_map or in_seq:
                out.append(part)
                node = node[part]
            elif isinstance(part, str) and (part in COLUMN_TAGS or "[" in part or part.startswith("function-")):
                continue
            else:
                out.append(part)
                node = None
        return tuple(out)

    def position(self, loc: Loc, at_key: bool = False) -> tuple[int, int]:
        node = self.tree
        line, col = 0, 0
        if isinstance(node, (CommentedMap, CommentedSeq)):
            line, col = node.lc.line, node.lc.col
        for i, part in enumerate(loc):
            last = i == len(loc) - 1
            if isinstance(node, CommentedMap) and part in node:
                # A block mapping or list starts on the line after its key: point at the key.
                nested = isinstance(node[part], (CommentedMap, CommentedSeq))
                pos = node.lc.key(part) if (last and (at_key or nested)) else node.lc.value(part)
                line, col = pos
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
                line, col = node.lc.item(part)
                node = node[part]
            else:
                break
        return line + 1, col + 1

    def error(self, loc: Loc, message: str, at_key: bool = False) -> RecipeError:
        loc = self.clean(loc)
        line, col = self.position(loc, at_key=at_key)
        return RecipeError(self.file, line, col, format_path(loc), message)


def _plain(node: Any) -> Any:
    """ruamel's round-trip types -> plain dict/list/str/int/float/bool/None."""
    if isinstance(node, dict):
        return {_plain(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required field is missing"
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind not in ("value_error", "assertion_error", "column_kind") and "input" in err:
        msg += f", got {err['input']!r}"
    return msg


@dataclass(frozen=True)
class LoadedRecipe:
    """A validated recipe together with where it came from."""

    recipe: Recipe
    file: str
    base_dir: Path
    locator: Locator = field(repr=False, compare=False)
    source: SourceInfo | None = field(default=None, repr=False, compare=False)  # the scanned source: rows
    tables: dict[str, Table] = field(default_factory=dict, repr=False, compare=False)  # table samplers' CSVs

    def with_overrides(
        self,
        size: int | None = None,
        seed: int | None = None,
        params: dict[str, Any] | None = None,
        on_bad_row: str | None = None,
    ) -> LoadedRecipe:
        """The same recipe with ``size``, ``seed``, declared ``params`` or the source's
        ``on_bad_row`` replaced (CLI flags)."""
        update: dict[str, Any] = {}
        if on_bad_row is not None:
            if self.recipe.source is None:
                raise UsageError("--on-bad-row: the recipe has no source: block")
            update["source"] = self.recipe.source.model_copy(update={"on_bad_row": on_bad_row})
        if size is not None:
            if size < 1:
                raise UsageError(f"--size: expected an integer >= 1, got {size}")
            if self.source is not None and size > self.source.rows:
                raise UsageError(f"--size: the source {self.source.display} has only {self.source.rows:,} rows")
            update["size"] = size
        if seed is not None:
            if seed < 0:
                raise UsageError(f"--seed: expected an integer >= 0, got {seed}")
            update["seed"] = seed
        if params:
            # A planner recipe's plan travels as params.plan (see datamill.engine.planner).
            planned = {"plan"} if self.recipe.planner is not None else set()
            unknown = sorted(set(params) - set(self.recipe.params) - planned)
            if unknown:
                known = ", ".join(self.recipe.params) or "none"
                flag = "--" + unknown[0].replace("_", "-")
                raise UsageError(f"{flag}: not a flag or a parameter of {self.recipe.name} (parameters: {known})")
            update["params"] = {**self.recipe.params, **params}
        recipe = self.recipe.model_copy(update=update)
        return LoadedRecipe(recipe, self.file, self.base_dir, self.locator, self.source, self.tables)

    @property
    def hash(self) -> str:
        return recipe_hash(self.recipe, self.source, self.tables)


# Model settings that decide how requests are sent, never what comes back: a run may resume with
# more concurrency, another timeout, a new budget or another server address for the same model.
OPERATIONAL_MODEL_KEYS = frozenset(
    {"base_url", "api_key_env", "concurrency", "threads", "max_retries", "timeout_s", "rpm", "tpm", "max_cost_usd",
     "max_tokens", "max_requests", "price_prompt_per_1k", "price_completion_per_1k"}
)  # fmt: skip


def recipe_hash(recipe: Recipe, source: SourceInfo | None = None, tables: dict[str, Table] | None = None) -> str:
    """A stable hash of everything in the recipe that decides its output.

    With a source, that includes the input's content (its hash and rows), not where it lies; so
    do table samplers' tables.
    """
    data = recipe.model_dump(mode="json")
    if tables:
        data["table_contents"] = {k: t.content_hash for k, t in sorted(tables.items())}
    if data.get("source") is None:
        data.pop("source", None)  # new field: recipes without one keep their hashes
    else:
        data["source"] = {"format": data["source"]["format"], "key": data["source"]["key"],
                          "content_hash": source.content_hash if source else None}  # fmt: skip
    data.pop("gates", None)  # gates judge the output; they do not decide it
    data.pop("exports", None)  # exports and the release shape what is shipped, not what is generated
    data.pop("release", None)
    # New fields at their defaults are left out, so recipes that do not use them keep their hashes.
    if data.get("planner") is None:
        data.pop("planner", None)
    elif data["planner"].get("model"):
        planner_model = data["planner"]["model"]
        data["planner"]["model"] = {k: v for k, v in planner_model.items() if k not in OPERATIONAL_MODEL_KEYS}
    if data.get("dedup"):
        if data["dedup"].get("on_exhausted") == "drop":
            data["dedup"].pop("on_exhausted")
        if data["dedup"].get("by") is None:
            data["dedup"].pop("by", None)
    if data.get("model"):
        data["model"] = {k: v for k, v in data["model"].items() if k not in OPERATIONAL_MODEL_KEYS}
        if not data["model"].get("extra_body"):
            data["model"].pop("extra_body", None)  # new field: an empty one keeps older run dirs' hashes
    for col in data["columns"].values():
        for kind in ("llm", "judge"):  # a judge's model block is its LLM column's (see JudgeColumn)
            override = (col.get(kind) or {}).get("model")
            if override:
                col[kind]["model"] = {k: v for k, v in override.items() if k not in OPERATIONAL_MODEL_KEYS}
    payload = orjson.dumps({"v": RECIPE_HASH_VERSION, "recipe": data}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(payload).hexdigest()[:16]


def load_text(text: str, file: str, base_dir: Path) -> LoadedRecipe:
    """Parse and validate recipe text; ``file`` is the name errors will carry."""
    yaml = YAML(typ="rt")
    try:
        tree = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = (exc.problem or exc.context or "invalid YAML").strip().replace("\n", " ")
        raise RecipeError(file, line, col, "", f"invalid YAML: {problem}") from None
    except YAMLError as exc:
        raise RecipeError(file, 1, 1, "", f"invalid YAML: {exc}".replace("\n", " ")) from None
    locator = Locator(file, tree)
    if not isinstance(tree, CommentedMap):
        raise locator.error((), "expected a mapping with name, size and columns")
    try:
        recipe = Recipe.model_validate(_plain(tree))
    except ValidationError as exc:
        # First error in file order; a missing field last, since a misspelt key often explains it.
        err = min(exc.errors(), key=lambda e: (e["type"] == "missing", locator.position(locator.clean(e["loc"]))))
        raise locator.error(err["loc"], _message(err), at_key=err["type"] == "extra_forbidden") from None
    from datamill.recipe.check import check_recipe

    source = None
    if recipe.source is not None:
        spec = recipe.source
        source = scan_cached(spec.path, spec.format, spec.key, base_dir)
        if recipe.size > source.rows:
            why = f"the source {spec.path} has only {source.rows:,} rows, got size {recipe.size}"
            raise locator.error(("size",), why)
        if recipe.size == 0:
            recipe = recipe.model_copy(update={"size": source.rows})
    loaded = LoadedRecipe(recipe, file, base_dir, locator, source, _tables(recipe, base_dir, locator))
    check_recipe(loaded)
    return loaded


def _tables(recipe: Recipe, base_dir: Path, locator: Locator) -> dict[str, Table]:
    """Each table sampler's CSV, read and checked against what the column asks of it."""
    from datamill.recipe.model import TableSampler

    out: dict[str, Table] = {}
    for name, col in recipe.columns.items():
        if not isinstance(col, TableSampler):
            continue
        where = ("columns", name)
        try:
            table = out.get(col.table) or load_table(base_dir / col.table)
            check_weights(table, col.weight)
        except TableError as exc:
            raise locator.error((*where, "table"), str(exc)) from None
        for key, wanted in (("value", [col.value] if col.value else []), ("given", list(col.given))):
            missing = [c for c in wanted if c not in table.columns]
            if missing:
                raise locator.error((*where, key), f"{col.table} has no column {missing[0]!r}; columns: "
                                                   f"{', '.join(table.columns)}")  # fmt: skip
        if col.weight in [col.value, *col.given]:
            raise locator.error((*where, "weight"), f"{col.weight!r} is the weight column; it cannot be a value too")
        out[col.table] = table
    return out


def load_file(path: str | Path) -> LoadedRecipe:
    """Load and validate a recipe file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(str(path), 0, 0, "", "no such recipe file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(str(path), 0, 0, "", f"cannot read recipe: {exc}") from None
    return load_text(text, str(path), p.resolve().parent)
