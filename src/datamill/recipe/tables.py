"""Weighted tables for ``{sampler: table}`` columns: a CSV with a weight column (census extracts).

A table is read once per process, checked (a header, numeric weights >= 0, no empty table), and
identified by its content hash: the recipe hash covers what the table says, not where it lies,
so a built-in recipe hashes the same on every machine and an edited table is a new recipe.

Format (documented in docs/personas.md): UTF-8 CSV with a header row; one column holds the weight
(a count or a share, any non-negative number); the others hold values. A conditional table also
has the columns it is conditioned on (``given``): each distinct combination of them is its own
distribution.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

_CACHE: dict[tuple[str, int, int], Table] = {}


@dataclass(frozen=True)
class Table:
    path: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    content_hash: str
    _index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def col(self, name: str) -> int:
        return self.columns.index(name)

    def weights(self, weight: str) -> list[float]:
        i = self.col(weight)
        return [float(r[i]) for r in self.rows]


class TableError(ValueError):
    """A table that cannot be read or does not hold what the column asks of it."""


def load_table(path: Path) -> Table:
    """The table at ``path`` (cached per process by path, size and modification time)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise TableError(f"cannot read table {path}: {exc.strerror or exc}") from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TableError(f"{path}: not UTF-8 text: {exc}") from None
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise TableError(f"{path}: empty file; expected a header row and at least one row") from None
    header = [h.strip() for h in header]
    if len(set(header)) != len(header) or any(not h for h in header):
        raise TableError(f"{path}:1: expected distinct, non-empty column names, got {header}")
    rows = []
    for line_no, raw in enumerate(reader, start=2):
        if not raw or all(not c.strip() for c in raw):
            continue
        if len(raw) != len(header):
            raise TableError(f"{path}:{line_no}: expected {len(header)} fields ({', '.join(header)}), got {len(raw)}")
        rows.append(tuple(c.strip() for c in raw))
    if not rows:
        raise TableError(f"{path}: no rows after the header")
    table = Table(str(path), tuple(header), tuple(rows), xxhash.xxh3_128_hexdigest(data))
    _CACHE[key] = table
    return table


def check_weights(table: Table, weight: str) -> None:
    """Every weight is a number >= 0 and they do not all vanish."""
    if weight not in table.columns:
        raise TableError(f"{table.path}: no weight column {weight!r}; columns: {', '.join(table.columns)}")
    i = table.col(weight)
    total = 0.0
    for n, row in enumerate(table.rows, start=2):
        try:
            w = float(row[i])
        except ValueError:
            raise TableError(f"{table.path}:{n}: {weight} {row[i]!r} is not a number") from None
        if not w >= 0:  # also refuses NaN
            raise TableError(f"{table.path}:{n}: {weight} must be >= 0, got {row[i]}")
        total += w
    if total <= 0:
        raise TableError(f"{table.path}: every {weight} is 0")
