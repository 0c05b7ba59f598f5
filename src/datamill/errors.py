"""The one exception tree of datamill.

::

    DatamillError                 root; never raised itself
    ├── InputError                bad input: the CLI exits 2 and writes nothing
    │   ├── RecipeError           a recipe that does not validate (file, line, column, field path)
    │   ├── UsageError            a flag or argument that makes no sense
    │   └── RunDirError           a run dir that is not ours to write (other recipe, busy shard)
    ├── DataError                 data on disk contradicts itself (duplicate sample_id, overlap):
    │                             the CLI exits 1
    ├── PlannerError              a planner model's reply that is no plan, even after repairs:
    │                             the CLI exits 1 (model output, not user input)
    └── HubError                  the Hugging Face Hub refused or failed an upload: the CLI exits 1

Library and OS errors are translated at the boundary with ``raise ... from exc`` so the CLI can
print one line for every failure it knows of.
"""

from __future__ import annotations


class DatamillError(Exception):
    """Root of every error datamill raises on purpose."""

    exit_code = 1


class InputError(DatamillError):
    """Bad input: a recipe, a flag, a file. Nothing has been written."""

    exit_code = 2


class UsageError(InputError):
    """A command-line flag or argument that cannot be honoured."""


class RunDirError(InputError):
    """A run dir that this run may not write: another recipe's, or a shard already running."""


class SourceError(InputError):
    """A source that cannot be read: ``FILE:LINE: what is wrong`` (exit 2, nothing written)."""


class DataError(DatamillError):
    """Data on disk that breaks an invariant, such as a duplicate sample_id."""


class PlannerError(DatamillError):
    """A planner's reply that does not parse into a plan after repairs (nothing but it was written)."""


class HubError(DatamillError):
    """An upload the Hugging Face Hub refused or that failed on the way (the token never in its message)."""


class RecipeError(InputError):
    """A recipe that does not validate.

    Its message is one line: ``FILE:LINE:COL: field.path: what was expected``.
    """

    def __init__(self, file: str, line: int, col: int, path: str, message: str) -> None:
        self.file = file
        self.line = line
        self.col = col
        self.path = path
        self.message = message
        where = f"{file}:{line}:{col}" if line > 0 else file
        super().__init__(f"{where}: {path}: {message}" if path else f"{where}: {message}")

    def __reduce__(self) -> tuple[object, ...]:  # crosses process pools intact
        return (type(self), (self.file, self.line, self.col, self.path, self.message))
