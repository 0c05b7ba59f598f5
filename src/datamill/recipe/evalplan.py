"""A planner's plan: categories with exact counts (seed 001's DatasetPlanInput), validated.

A plan comes from a planner model (a JSON reply) or from the user (``--plan FILE``, YAML or JSON).
Both go through :class:`EvalPlan`; a file's mistakes point at ``FILE:LINE:COL: field.path`` like a
recipe's. The normal form (:meth:`EvalPlan.normal`) is what the run dir saves and what a resume
compares, so a plan written as YAML and the same plan as JSON are one plan.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from datamill.errors import RecipeError, UsageError

CATEGORY_PATTERN = r"^[a-z0-9][a-z0-9_]*$"


def _texts(v: Any) -> list[str]:
    """Seed 001 writes one example as a string and expectations as a ``{name: value}`` map."""
    if v is None:
        return []
    if isinstance(v, str):
        return [v] if v.strip() else []
    if isinstance(v, dict):
        return [f"{k}: {val}" for k, val in v.items()]
    if isinstance(v, list):
        return [str(x) for x in v if str(x).strip()]
    return [str(v)]


class PlanCategory(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=CATEGORY_PATTERN, max_length=64)
    description: str = Field(min_length=1, max_length=2000)
    count: int = Field(ge=1)
    example_inputs: list[str] = Field(default_factory=list)
    expectations: list[str] = Field(default_factory=list)

    @field_validator("example_inputs", "expectations", mode="before")
    @classmethod
    def _as_texts(cls, v: Any) -> list[str]:
        return _texts(v)


class EvalPlan(BaseModel):
    """``{categories: [...], dataset_name?, total_instances?}``; a bare list of categories also works."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    categories: list[PlanCategory] = Field(min_length=1)
    dataset_name: str | None = None
    total_instances: int | None = Field(None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _bare_list(cls, v: Any) -> Any:
        return {"categories": v} if isinstance(v, list) else v

    @model_validator(mode="after")
    def _consistent(self) -> EvalPlan:
        names = [c.name for c in self.categories]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise ValueError(f"categories: {dup!r} is named twice; expected distinct names")
        if self.total_instances is not None and self.total_instances != self.total:
            raise ValueError(f"total_instances is {self.total_instances} but the counts sum to {self.total}")
        return self

    @property
    def total(self) -> int:
        return sum(c.count for c in self.categories)

    def normal(self) -> dict[str, Any]:
        """The saved form: categories only, in plan order."""
        return {"categories": [c.model_dump() for c in self.categories]}

    def only(self, names: list[str], where: str) -> EvalPlan:
        """The plan restricted to ``names`` (a hint), in hint order; an unknown name is a usage error."""
        have = {c.name: c for c in self.categories}
        unknown = [n for n in names if n not in have]
        if unknown:
            raise UsageError(f"{where}: unknown category {unknown[0]!r}; the plan has: {', '.join(have)}")
        return EvalPlan.model_validate({"categories": [have[n].model_dump() for n in names]})


def slug(name: str) -> str:
    """A category name as plans spell them: lower case, digits and ``_``."""
    s = re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")
    return s[:64] or "category"


def parse_hints(text: str) -> list[tuple[str, int | None]]:
    """``--param categories=a,b:200,c`` -> ``[(a, None), (b, 200), (c, None)]``."""
    out: list[tuple[str, int | None]] = []
    for item in (t.strip() for t in str(text).split(",")):
        if not item:
            continue
        name, sep, count = item.partition(":") if ":" in item else item.partition("=")
        n: int | None = None
        if sep:
            try:
                n = int(count)
            except ValueError:
                raise UsageError(f"--param categories: expected NAME or NAME:COUNT, got {item!r}") from None
            if n < 1:
                raise UsageError(f"--param categories: expected a count >= 1, got {item!r}")
        if slug(name) in [h[0] for h in out]:
            raise UsageError(f"--param categories: {slug(name)!r} is named twice")
        out.append((slug(name), n))
    return out


def load_plan_file(path: str | Path) -> EvalPlan:
    """Read and validate a plan file (YAML or JSON); errors carry the file, line and field."""
    from datamill.recipe.loader import Locator, _message, _plain

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--plan: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"--plan: {path} is not UTF-8 text: {exc}") from None
    try:
        tree = YAML(typ="rt").load(text)  # JSON is YAML too, with positions
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = str(getattr(exc, "problem", None) or exc).strip().replace("\n", " ")
        raise RecipeError(str(path), line, col, "", f"invalid YAML/JSON: {problem}") from None
    locator = Locator(str(path), tree)
    if not isinstance(tree, (CommentedMap, CommentedSeq)):
        raise locator.error((), "expected a mapping with categories: [...] (or a list of categories)")
    try:
        return EvalPlan.model_validate(_plain(tree))
    except ValidationError as exc:
        err = min(exc.errors(), key=lambda e: (e["type"] == "missing", locator.position(locator.clean(e["loc"]))))
        loc = err["loc"]
        if isinstance(tree, CommentedSeq) and loc and loc[0] == "categories":
            loc = loc[1:]  # a bare list: its items are the categories
        raise locator.error(loc, _message(err), at_key=err["type"] == "extra_forbidden") from None
