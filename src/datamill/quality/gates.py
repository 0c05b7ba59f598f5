"""Gates: bounds on metrics with a severity. A failed ``fail`` gate makes verify exit 1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from datamill.errors import InputError
from datamill.recipe.model import GateSpec


def load_gates(path: str | Path) -> list[GateSpec]:
    """Gates from a YAML file: a list, or a mapping with a ``gates:`` list."""
    p = Path(path)
    try:
        data = YAML(typ="safe").load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"--gates: {path}: no such file") from None
    except YAMLError as exc:
        raise InputError(f"--gates: {path}: invalid YAML: {exc}".replace("\n", " ")) from None
    if isinstance(data, dict):
        data = data.get("gates")
    if not isinstance(data, list):
        raise InputError(f"--gates: {path}: expected a list of gates (or a mapping with gates:)")
    out = []
    for i, item in enumerate(data):
        try:
            out.append(anchored(GateSpec.model_validate(item), p.parent))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            raise InputError(f"--gates: {path}: gates[{i}]{'.' + where if where else ''}: {msg}") from None
    return out


def anchored(spec: GateSpec, base_dir: Path) -> GateSpec:
    """``spec`` with its data files (``table``, ``patterns``, ``lexicon``) resolved against ``base_dir``."""
    update = {k: str((base_dir / v).resolve()) for k in ("table", "patterns", "lexicon")
              if isinstance(v := getattr(spec, k), str) and not Path(v).expanduser().is_absolute()}  # fmt: skip
    return spec.model_copy(update=update) if update else spec


def evaluate(gates: list[GateSpec], metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One result per gate: the value found, whether it passed, and why not."""
    results = []
    for g in gates:
        assert g.metric is not None  # set by GateSpec's validator for content checks
        value = metrics.get(g.metric)
        res: dict[str, Any] = {"metric": g.metric, "min": g.min, "max": g.max, "severity": g.severity, "value": value}
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            res.update(passed=False, reason=f"no numeric metric {g.metric!r} in this report")
        elif g.min is not None and value < g.min:
            res.update(passed=False, reason=f"{value:g} < min {g.min:g}")
        elif g.max is not None and value > g.max:
            res.update(passed=False, reason=f"{value:g} > max {g.max:g}")
        else:
            res.update(passed=True, reason="")
        results.append(res)
    return results
