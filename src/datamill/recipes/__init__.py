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
}


def builtin_path(name: str) -> Path | None:
    """The recipe file of built-in ``name``, or None."""
    entry = BUILTINS.get(name)
    return entry[0] if entry else None
