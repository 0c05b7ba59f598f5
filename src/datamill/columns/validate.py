"""Validate columns: ``{ok, error}`` from parsing one field as JSON, Python, SQL or a regex.

Models write code and data that look right and do not parse; a validator says so per record,
deterministically and without a model, so a gate can bound the share that fails
(``max_invalid_rate``). Parsers are the real ones: orjson, :func:`ast.parse`, sqlglot.

sqlglot is lenient where a checker must not be: it falls back to an opaque ``Command`` for
statements it does not know (``SHOW TABLES`` in generic SQL), parses a bare expression as a
statement (``garbage`` is a column), accepts ``SELECT`` with no column list, ``UPDATE t SET``
with nothing set, and drops an empty list item (``SELECT a,, b``). Each of these is invalid here.
"""

from __future__ import annotations

import ast
import functools
import itertools
import logging
import random
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from datamill.columns.base import Column, SlotState
from datamill.columns.fields import MISSING, field_value
from datamill.recipe.model import ValidateColumn

MAX_ERROR = 300  # characters of a parser's message kept in the record


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 3] + "..."


def check_json(text: str) -> str | None:
    """None when ``text`` is one JSON document, else why not."""
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return _clip(str(exc))
    return None


def check_python(text: str) -> str | None:
    """None when ``text`` parses as a Python module, else ``line L: message``."""
    try:
        with warnings.catch_warnings():
            # Valid code may warn (an invalid escape in a string); under -W error that must not read as invalid.
            warnings.simplefilter("ignore")
            ast.parse(text)
    except SyntaxError as exc:  # IndentationError and TabError are SyntaxErrors
        return _clip(f"line {exc.lineno}: {exc.msg}" if exc.lineno else exc.msg)
    except (ValueError, RecursionError, MemoryError) as exc:  # NUL bytes; nesting past the parser's limits
        return _clip(f"{type(exc).__name__}: {exc}")
    return None


@contextmanager
def _quiet_sqlglot() -> Iterator[None]:
    """sqlglot logs a warning for each statement it falls back to a Command on; we report it instead."""
    logger = logging.getLogger("sqlglot")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@functools.cache
def _statement_types() -> tuple[type, ...]:
    """sqlglot's statement node types (whatever else parses at the top is a bare expression)."""
    from sqlglot import exp

    names = ("Query", "Insert", "Update", "Delete", "Merge", "Create", "Drop", "Alter", "TruncateTable", "Grant",
             "Revoke", "Use", "Set", "Transaction", "Commit", "Rollback", "Describe", "Pragma", "Copy", "Analyze",
             "Cache", "Uncache", "Comment", "Kill", "Refresh", "Show", "LoadData", "Values")  # fmt: skip
    return tuple(t for t in (getattr(exp, n, None) for n in names) if isinstance(t, type))


def check_sql(text: str, dialect: str | None = None) -> str | None:
    """None when ``text`` is one or more SQL statements sqlglot parses in full, else why not."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.dialects.dialect import Dialect
    from sqlglot.errors import ErrorLevel, ParseError, TokenError
    from sqlglot.tokens import TokenType

    try:
        with _quiet_sqlglot():
            tokens = Dialect.get_or_raise(dialect).tokenize(text)
            trees = sqlglot.parse(text, read=dialect, error_level=ErrorLevel.RAISE)
    except ParseError as exc:
        if exc.errors:
            e = exc.errors[0]
            return _clip(f"line {e.get('line')}, col {e.get('col')}: {e.get('description')}")
        return _clip(str(exc))
    except TokenError as exc:
        return _clip(str(exc))
    except RecursionError:
        return "RecursionError: nested too deeply to parse"
    statements = [t for t in trees if t is not None]
    if not statements:
        return "no SQL statement"
    kinds = _statement_types()
    for tree in statements:
        if isinstance(tree, exp.Command) or not isinstance(tree, kinds):
            what = "a statement the parser does not know" if isinstance(tree, exp.Command) else "not a SQL statement"
            return _clip(f"{what}: {tree.sql()[:80]!r}")
        for select in tree.find_all(exp.Select):
            if not select.expressions:
                return "a SELECT without a column list"
        if isinstance(tree, exp.Update) and not tree.expressions:
            return "an UPDATE without SET assignments"
    comma = next((b for a, b in itertools.pairwise(tokens) if a.token_type == b.token_type == TokenType.COMMA), None)
    if comma is not None:
        return f"line {comma.line}, col {comma.col}: an empty item between two commas"
    return None


class Validate(Column):
    """A ``validate`` column: ``{"ok": bool, "error": str | None}`` for one field of the row."""

    uses_rng = False

    def __init__(self, name: str, spec: ValidateColumn) -> None:
        super().__init__(name, spec.emit)
        self.field = spec.field
        self.kind = spec.validate_
        self.dialect = spec.dialect
        self._regex = re.compile(self.kind.removeprefix("regex:")) if self.kind.startswith("regex:") else None

    def check(self, text: str) -> str | None:
        """Why ``text`` is invalid, or None."""
        if self._regex is not None:
            if self._regex.fullmatch(text) is None:
                return _clip(f"does not match {self._regex.pattern!r}")
            return None
        if self.kind == "json":
            return check_json(text)
        if self.kind == "python":
            return check_python(text)
        return check_sql(text, self.dialect)

    def evaluate_row(self, state: SlotState, row: dict[str, Any], rng: random.Random) -> Any:
        value = field_value(row, self.field)
        if value is MISSING:
            error: str | None = f"field {self.field!r} is missing"
        elif not isinstance(value, str):
            kind = "null" if value is None else type(value).__name__
            error = f"expected a string in field {self.field!r}, got {kind}"
        else:
            error = self.check(value)
        return {"ok": error is None, "error": error}
