"""datamill: synthetic datasets at any size, reproducibly, fast, with their quality measured.

The Python API (see docs/python.md) is the one entry point; ``datamill <verb>`` is a thin shell
over it.
"""

__version__ = "0.1.0"

from datamill.api import (
    Dataset,
    Recipe,
    ReleaseResult,
    RunResult,
    builtin_recipes,
    cat,
    dedup,
    doctor,
    estimate,
    export,
    fsck,
    golden_create,
    golden_run,
    load_recipe,
    map,
    map_recipe,
    merge,
    plan,
    read,
    release,
    report,
    run,
    status,
    telemetry,
    touches,
    verify,
)
from datamill.errors import DataError, DatamillError, HubError, InputError, RecipeError, UsageError

__all__ = [
    "DataError",
    "DatamillError",
    "Dataset",
    "HubError",
    "InputError",
    "Recipe",
    "RecipeError",
    "ReleaseResult",
    "RunResult",
    "UsageError",
    "__version__",
    "builtin_recipes",
    "cat",
    "dedup",
    "doctor",
    "estimate",
    "export",
    "fsck",
    "golden_create",
    "golden_run",
    "load_recipe",
    "map",
    "map_recipe",
    "merge",
    "plan",
    "read",
    "release",
    "report",
    "run",
    "status",
    "telemetry",
    "touches",
    "verify",
]
