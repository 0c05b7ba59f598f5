"""datamill: synthetic datasets at any size, reproducibly, fast, with their quality measured.

The Python API (see docs/python.md) is the one entry point; ``datamill <verb>`` is a thin shell
over it.
"""

__version__ = "0.1.0"

from datamill.api import (
    Dataset,
    Recipe,
    RunResult,
    builtin_recipes,
    cat,
    dedup,
    doctor,
    estimate,
    fsck,
    golden_create,
    golden_run,
    load_recipe,
    map,
    map_recipe,
    merge,
    plan,
    read,
    report,
    run,
    status,
    telemetry,
    touches,
    verify,
)
from datamill.errors import DataError, DatamillError, InputError, RecipeError, UsageError

__all__ = [
    "DataError",
    "DatamillError",
    "Dataset",
    "InputError",
    "Recipe",
    "RecipeError",
    "RunResult",
    "UsageError",
    "__version__",
    "builtin_recipes",
    "cat",
    "dedup",
    "doctor",
    "estimate",
    "fsck",
    "golden_create",
    "golden_run",
    "load_recipe",
    "map",
    "map_recipe",
    "merge",
    "plan",
    "read",
    "report",
    "run",
    "status",
    "telemetry",
    "touches",
    "verify",
]
