"""Built-in recipes, runnable by name: ``datamill run lambda-traces --size N --out DIR``."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).parent

BUILTINS: dict[str, tuple[Path, str]] = {
    "lambda-traces": (
        _HERE / "lambda_traces" / "recipe.yaml",
        "normal-order reduction traces of random closed lambda terms (de Bruijn), one record per step",
    ),
    "contextual": (
        _HERE / "contextual" / "recipe.yaml",
        "tool-use and context-integration prompts with marked teacher spans, long-context quota (seed 000)",
    ),
    "evalset": (
        _HERE / "evalset" / "recipe.yaml",
        "evaluation cases for a described system: planned categories with exact counts, written in batches "
        "by a worker model, deduplicated, judged (seed 001)",
    ),
    "personas": (
        _HERE / "personas" / "recipe.yaml",
        "people of a made-up country from census-like tables (exact joint counts), OCEAN, anchors, narratives "
        "(seed 003)",
    ),
}


def builtin_plan(name: str) -> Path | None:
    """A plan shipped with the evalset recipe (``customer-service``), or None."""
    path = _HERE / "evalset" / "plans" / f"{name}.yaml"
    return path if path.is_file() else None


def builtin_path(name: str) -> Path | None:
    """The recipe file of built-in ``name``, or None."""
    entry = BUILTINS.get(name)
    return entry[0] if entry else None
