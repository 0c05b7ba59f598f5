"""Sources: existing rows a recipe maps over, read by slot range in flat memory.

A source is a JSONL file, a CSV file (with a header), a Parquet file, or a dataset folder (what
``datasets.save_to_disk`` writes, or a folder of Parquet files). Row i is slot i.

:func:`scan` reads the source once, start to end: it counts rows, hashes the bytes (the hash is
part of the recipe hash, so a resume over a changed input is refused), checks every row (valid
JSON object, right CSV arity, UTF-8, key present and unique) and keeps a sparse index (one
checkpoint every :data:`STRIDE` rows) so later reads seek instead of re-reading. Nothing it keeps
grows with the rows but the index (a few bytes per thousand rows) and the bad rows it found.

:meth:`Source.rows` yields the rows of ``[start, end)``; a row that could not be read is yielded
as a :class:`BadRow` carrying ``FILE:LINE: what is wrong``. Reads go forward from the nearest
checkpoint (or from where the last read stopped), so a process reading its ranges in order reads
each byte once.
"""

from __future__ import annotations

import csv
import heapq
import json
import os
import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import xxhash

from datamill.errors import SourceError

STRIDE = 1024  # rows between checkpoints of a text source's index
FORMATS = ("auto", "jsonl", "csv", "parquet", "hf")
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json", ".jsonl.txt")
_CHUNK = 1 << 20
_RUN = 1 << 16  # key hashes sorted at a time when looking for duplicates


@dataclass(frozen=True)
class BadRow:
    """A row that could not be read; ``reason`` is ``FILE:LINE: what is wrong``."""

    reason: str


@dataclass(frozen=True)
class SourceInfo:
    """What a scan learned: small and picklable, so workers read without scanning again."""

    path: str  # absolute
    format: str  # jsonl | csv | parquet | arrow
    files: tuple[str, ...]  # the data files, in row order
    rows: int
    columns: tuple[str, ...]
    content_hash: str
    key: str | None
    # jsonl/csv: (byte offset, line number) of rows 0, STRIDE, 2*STRIDE, ...
    # parquet/arrow: rows in each file
    index: tuple[tuple[int, int], ...] = ()
    bad: tuple[tuple[int, str], ...] = ()  # (row, reason), in row order
    display: str = ""  # the path as the user wrote it, for messages

    def describe(self) -> dict[str, Any]:
        """What the manifest records of the source."""
        return {
            "path": self.path,
            "format": self.format,
            "rows": self.rows,
            "columns": list(self.columns),
            "key": self.key,
            "content_hash": self.content_hash,
            "bad_rows": len(self.bad),
        }


def detect_format(path: Path, fmt: str, display: str = "") -> str:
    """The concrete format of ``path`` (``fmt`` is one of :data:`FORMATS`)."""
    if fmt == "hf":
        return "hf"
    if path.is_dir():
        if fmt not in ("auto", "parquet"):
            raise SourceError(f"{display or path}: is a directory; a {fmt} source is one file")
        return "hf"
    if fmt != "auto":
        return fmt
    name = path.name.lower()
    if name.endswith(_JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith((".csv", ".tsv")):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith(".arrow"):
        return "hf"
    raise SourceError(
        f"{display or path}: cannot tell the format from the name; set source.format (jsonl, csv, parquet, hf)"
    )


def scan(path: str | Path, fmt: str = "auto", key: str | None = None, base_dir: Path | None = None) -> SourceInfo:
    """Read the whole source once and return what later reads need (see the module docstring).

    File-level problems (no such file, an empty file, a folder that is not a dataset, a key column
    the source does not have) raise :class:`SourceError`; row-level ones are returned in ``bad``.
    """
    display = str(path)
    p = Path(path)
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    p = p.resolve()
    if not p.exists():
        raise SourceError(f"{display}: no such file or directory")
    kind = detect_format(p, fmt, display)
    if kind == "jsonl":
        info = _scan_jsonl(p, key, display)
    elif kind == "csv":
        info = _scan_csv(p, key, display)
    elif kind == "parquet":
        info = _scan_tables(p, [p], "parquet", key, display)
    else:
        files, table_fmt = _dataset_files(p, display)
        info = _scan_tables(p, files, table_fmt, key, display)
    if info.rows == 0:
        raise SourceError(f"{display}: has no rows")
    return info


# -- keys ------------------------------------------------------------------------------------------


class _Keys:
    """Duplicate detection from 8-byte hashes in flat arrays, confirmed on the exact values."""

    def __init__(self, key: str | None, display: str) -> None:
        self.key = key
        self.display = display
        self.hashes = array("Q")
        self.rows = array("q")  # the row of each hash
        self.lines = array("q")  # and its line (or row number, for tables)

    def take(self, value: Any, row: int, line: int) -> str | None:
        """Record ``value`` as the key of ``row``; or say why it cannot be a key."""
        problem = self.check(value)
        if problem is None:
            self.add(value, row, line)
        return problem

    def check(self, value: Any) -> str | None:
        """Why ``value`` cannot be a key, or None."""
        if value is None:
            return f"key column {self.key!r} is empty"
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            return f"key column {self.key!r} must be a string or an integer, got {type(value).__name__}"
        if isinstance(value, str) and not value:
            return f"key column {self.key!r} is empty"
        return None

    def add(self, value: Any, row: int, line: int) -> None:
        self.hashes.append(xxhash.xxh3_64_intdigest(str(value).encode()))
        self.rows.append(row)
        self.lines.append(line)

    def duplicates(self, values_of: Any) -> list[tuple[int, str]]:
        """(row, reason) of every row whose key an earlier row already had.

        ``values_of(rows)`` returns the exact key values of the given rows (read again only when a
        hash repeats, so the common case never does).
        """
        # Sorted runs of the hashes merged in one pass: 8 bytes a row, plus one run being sorted.
        # (pyarrow's hash kernels would cost ~50 MB of resident memory the first time they run.)
        runs = [array("Q", sorted(self.hashes[i : i + _RUN])) for i in range(0, len(self.hashes), _RUN)]
        repeated: set[int] = set()
        prev = None
        for h in heapq.merge(*runs):
            if h == prev:
                repeated.add(h)
            prev = h
        del runs
        if not repeated:
            return []
        at = [i for i, h in enumerate(self.hashes) if h in repeated]
        values = values_of([self.rows[i] for i in at])
        out = []
        firsts: dict[str, int] = {}
        for i in at:  # in row order
            v = str(values[self.rows[i]])
            if v in firsts:
                out.append((self.rows[i], f"duplicate key {v!r} (first on line {self.lines[firsts[v]]})"))
            else:
                firsts[v] = i
        return out


# -- JSONL -----------------------------------------------------------------------------------------


def _utf8_problem(line: bytes) -> str | None:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8: byte 0x{line[exc.start]:02x} at column {exc.start + 1}"
    return None


_LONG_DIGITS = re.compile(rb"\d{19}")


def _lossy(line: bytes) -> bool:
    """Whether orjson reads an integer of ``line`` as a float (it does past 64 bits; json does not)."""

    def has_big(v: Any) -> bool:
        if isinstance(v, int) and not isinstance(v, bool):
            return not -(2**63) <= v < 2**64
        if isinstance(v, dict):
            return any(has_big(x) for x in v.values())
        if isinstance(v, list):
            return any(has_big(x) for x in v)
        return False

    try:
        return has_big(json.loads(line))
    except ValueError:
        return False


def _jsonl_row(line: bytes, key: str | None) -> tuple[dict[str, Any] | None, str | None]:
    problem = _utf8_problem(line)
    if problem:
        return None, problem
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        what = str(exc).split(": line", 1)[0]
        return None, f"not valid JSON ({what})"
    if _LONG_DIGITS.search(line) and _lossy(line):
        return None, "an integer beyond 64 bits (it would come back as a rounded float); quote it as a string"
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    if key is not None and key not in obj:
        return None, f"missing key column {key!r}"
    return obj, None


def _scan_jsonl(p: Path, key: str | None, display: str) -> SourceInfo:
    digest = xxhash.xxh3_128()
    index: list[tuple[int, int]] = []
    bad: list[tuple[int, str]] = []
    columns: dict[str, None] = {}
    keys = _Keys(key, display)
    row = 0
    offset = 0
    with open(p, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            digest.update(line)
            start, offset = offset, offset + len(line)
            if not line.strip():
                continue
            if row % STRIDE == 0:
                index.append((start, lineno))
            obj, problem = _jsonl_row(line, key)
            if obj is not None:
                for c in obj:
                    if c not in columns:
                        columns[c] = None
                if key is not None:
                    problem = keys.take(obj[key], row, lineno)
            if problem:
                bad.append((row, f"{display}:{lineno}: {problem}"))
            row += 1
    if row and not columns:
        raise SourceError(f"{display}: no row could be read ({bad[0][1]})")
    info = SourceInfo(str(p), "jsonl", (str(p),), row, tuple(columns), digest.hexdigest(), key, tuple(index),
                      (), display)  # fmt: skip
    dups = keys.duplicates(lambda rows: _key_values(info, rows))
    return _with_bad(info, bad, dups)


def _with_bad(info: SourceInfo, bad: list[tuple[int, str]], dups: list[tuple[int, str]]) -> SourceInfo:
    if dups:
        name = info.display
        bad = sorted(bad + [(r, f"{name}:{_line_of(info, r)}: {why}") for r, why in dups])
    return SourceInfo(**{**info.__dict__, "bad": tuple(bad)})


def _line_of(info: SourceInfo, row: int) -> int | str:
    if info.format in ("jsonl", "csv"):
        for r, line, _ in _text_rows(info, row, row + 1):
            if r == row:
                return line
    return f"row {row + 1}"


def _key_values(info: SourceInfo, rows: list[int]) -> dict[int, Any]:
    wanted = set(rows)
    out: dict[int, Any] = {}
    src = Source(info)
    for lo in rows:
        if lo in out:
            continue
        for i, r in enumerate(src.rows(lo, lo + 1)):
            if not isinstance(r, BadRow) and lo + i in wanted:
                out[lo + i] = r[info.key]  # type: ignore[index]
    return out


# -- CSV -------------------------------------------------------------------------------------------


class _Lines:
    """Physical lines of a binary file for :mod:`csv`, counting bytes and lines consumed."""

    def __init__(self, f: Any, offset: int, lineno: int, digest: Any = None) -> None:
        self.f = f
        self.offset = offset
        self.lineno = lineno - 1
        self.digest = digest

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self.f.readline()
        if not line:
            raise StopIteration
        if self.digest is not None:
            self.digest.update(line)
        self.offset += len(line)
        self.lineno += 1
        return line.decode("utf-8", errors="surrogateescape")


def _csv_problem(values: list[str], width: int) -> str | None:
    if len(values) != width:
        return f"expected {width} fields (as in the header), got {len(values)}"
    for v in values:
        try:
            v.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = v[exc.start].encode("utf-8", errors="surrogateescape")[0]
            return f"not UTF-8: byte 0x{bad:02x}"
    return None


def _scan_csv(p: Path, key: str | None, display: str) -> SourceInfo:
    digest = xxhash.xxh3_128()
    index: list[tuple[int, int]] = []
    bad: list[tuple[int, str]] = []
    keys = _Keys(key, display)
    with open(p, "rb") as f:
        lines = _Lines(f, 0, 1, digest)
        reader = csv.reader(lines, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise SourceError(f"{display}: is empty (a CSV source needs a header line)") from None
        except csv.Error as exc:
            raise SourceError(f"{display}:1: the header is not valid CSV ({exc})") from None
        problem = _csv_problem(header, len(header))
        if problem:
            raise SourceError(f"{display}:1: the header is {problem}")
        names = [h.strip() for h in header]
        for n in names:
            if not n:
                raise SourceError(f"{display}:1: the header has an empty column name")
            if names.count(n) > 1:
                raise SourceError(f"{display}:1: the header names column {n!r} twice")
        if key is not None and key not in names:
            raise SourceError(f"{display}:1: no key column {key!r} in the header (columns: {', '.join(names)})")
        key_at = names.index(key) if key is not None else -1
        row = 0
        while True:
            start, lineno = lines.offset, lines.lineno + 1
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                # The rest of the file cannot be split into records reliably: a file-level error.
                raise SourceError(f"{display}:{lineno}: not valid CSV ({exc})") from None
            if not values:
                continue
            if row % STRIDE == 0:
                index.append((start, lineno))
            problem = _csv_problem(values, len(names))
            if problem is None and key is not None:
                problem = keys.take(values[key_at], row, lineno)
            if problem:
                bad.append((row, f"{display}:{lineno}: {problem}"))
            row += 1
    info = SourceInfo(str(p), "csv", (str(p),), row, tuple(names), digest.hexdigest(), key, tuple(index), (), display)
    dups = keys.duplicates(lambda rows: _key_values(info, rows))
    return _with_bad(info, bad, dups)


# -- Parquet and Arrow -----------------------------------------------------------------------------


def _dataset_files(p: Path, display: str) -> tuple[list[Path], str]:
    """The data files of a dataset folder, in row order, and their format."""
    if p.is_file():
        return [p], "arrow"
    state = p / "state.json"
    if state.is_file():
        try:
            files = [p / f["filename"] for f in orjson.loads(state.read_bytes())["_data_files"]]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise SourceError(f"{display}/state.json: not a datasets state file ({exc})") from None
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise SourceError(f"{display}: state.json names {missing[0].name}, which is missing")
        return files, "arrow"
    if (p / "dataset_dict.json").is_file():
        splits = sorted(d.name for d in p.iterdir() if d.is_dir())
        raise SourceError(f"{display}: a DatasetDict folder; point source.path at one split ({', '.join(splits)})")
    parquet = sorted(f for f in p.rglob("*.parquet") if f.is_file())
    if parquet:
        return parquet, "parquet"
    arrow = sorted(f for f in p.rglob("*.arrow") if f.is_file())
    if arrow:
        return arrow, "arrow"
    raise SourceError(
        f"{display}: not a dataset folder (expected what datasets.save_to_disk writes, or .parquet files)"
    )


def _arrow() -> Any:
    """pyarrow, allocating from the C library's heap (unless ``ARROW_DEFAULT_MEMORY_POOL`` says
    otherwise): its default mimalloc pool keeps freed memory per thread, which measured 50 MB more
    peak RSS on a 170K-row Parquet map on 2 workers (154 MB against 104 MB)."""
    import pyarrow as pa

    global _POOL_SET
    if not _POOL_SET:
        _POOL_SET = True
        if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
            pa.set_memory_pool(pa.system_memory_pool())
    return pa


_POOL_SET = False


def _open_arrow(path: Path) -> Any:
    pa = _arrow()
    source = pa.memory_map(str(path))
    try:
        return pa.ipc.open_stream(source)
    except pa.ArrowInvalid:
        return pa.ipc.open_file(source)


def _batches(fmt: str, path: Path, columns: list[str] | None = None, batch_size: int = 4096) -> Iterator[Any]:
    """Record batches of one data file, in order."""
    pa = _arrow()

    if fmt == "parquet":
        import pyarrow.parquet as pq

        yield from pq.ParquetFile(str(path)).iter_batches(batch_size=batch_size, columns=columns)
        return
    reader = _open_arrow(path)
    if isinstance(reader, pa.ipc.RecordBatchFileReader):
        batches: Iterator[Any] = (reader.get_batch(i) for i in range(reader.num_record_batches))
    else:
        batches = iter(reader)
    for b in batches:
        yield b.select(columns) if columns is not None else b


def _scan_tables(p: Path, files: list[Path], fmt: str, key: str | None, display: str) -> SourceInfo:
    pa = _arrow()

    digest = xxhash.xxh3_128()
    counts: list[tuple[int, int]] = []
    columns: list[str] | None = None
    bad: list[tuple[int, str]] = []
    keys = _Keys(key, display)
    row = 0
    for f in files:
        digest.update(str(f.relative_to(p) if f != p else f.name).encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        try:
            if fmt == "parquet":
                import pyarrow.parquet as pq

                schema = pq.ParquetFile(str(f)).schema_arrow
            else:
                schema = _open_arrow(f).schema
        except (pa.ArrowInvalid, OSError) as exc:
            where = display if f == p else f"{display}: {f.name}"
            raise SourceError(f"{where}: not a {fmt} file ({exc})") from None
        names = list(schema.names)
        if columns is None:
            columns = names
        elif names != columns:
            raise SourceError(f"{display}: {f.name} has columns {names}, other files have {columns}")
        if key is not None and key not in names:
            raise SourceError(f"{display}: no key column {key!r} (columns: {', '.join(names)})")
        n = 0
        for batch in _batches(fmt, f, [key] if key is not None else [names[0]] if names else None):
            if key is not None:
                for v in batch.column(0).to_pylist():
                    problem = keys.take(v, row + n, row + n + 1)
                    if problem is not None:
                        bad.append((row + n, f"{display}:row {row + n + 1}: {problem}"))
                    n += 1
            else:
                n += batch.num_rows
        counts.append((n, 0))
        row += n
    pa.default_memory_pool().release_unused()  # the scan's buffers, before a run's workers fork
    info = SourceInfo(str(p), fmt, tuple(map(str, files)), row, tuple(columns or ()), digest.hexdigest(), key,
                      tuple(counts), (), display)  # fmt: skip
    dups = [(r, why.replace("first on line ", "first on row ")) for r, why in
            keys.duplicates(lambda rows: _key_values(info, rows))]  # fmt: skip
    return _with_bad(info, bad, dups)


# -- reading ---------------------------------------------------------------------------------------


def _text_rows(info: SourceInfo, start: int, end: int) -> Iterator[tuple[int, int, Any]]:
    """``(row, line, value)`` of rows ``[start, end)`` of a JSONL or CSV source, from its index."""
    cp = min(start // STRIDE, len(info.index) - 1)
    offset, lineno = info.index[cp]
    row = cp * STRIDE
    with open(info.path, "rb") as f:
        f.seek(offset)
        if info.format == "jsonl":
            for line in f:
                if row >= end:
                    return
                if line.strip():
                    if row >= start:
                        yield row, lineno, line
                    row += 1
                lineno += 1
            return
        lines = _Lines(f, offset, lineno)
        reader = csv.reader(lines, strict=True)
        while row < end:
            at = lines.lineno + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            if not values:
                continue
            if row >= start:
                yield row, at, values
            row += 1


class Source:
    """Reads rows of a scanned source by slot range (see the module docstring)."""

    def __init__(self, info: SourceInfo) -> None:
        self.info = info
        self._bad = dict(info.bad)
        self._cursor: tuple[int, Iterator[Any]] | None = None  # tables: (next row, row iterator)

    def rows(self, start: int, end: int) -> Iterator[dict[str, Any] | BadRow]:
        """Rows ``[start, end)`` in order: dicts of the input columns, or :class:`BadRow`."""
        info = self.info
        end = min(end, info.rows)
        if info.format in ("jsonl", "csv"):
            for row, lineno, value in _text_rows(info, start, end):
                yield self._text_row(row, lineno, value)
            return
        it = self._table_iter(start)
        for row in range(start, end):
            value = next(it)
            self._cursor = (row + 1, it)
            yield BadRow(self._bad[row]) if row in self._bad else value

    def _text_row(self, row: int, lineno: int, value: Any) -> dict[str, Any] | BadRow:
        if row in self._bad:
            return BadRow(self._bad[row])
        info = self.info
        if info.format == "jsonl":
            obj, problem = _jsonl_row(value, info.key)
            if obj is None:  # the file changed since the scan
                return BadRow(f"{info.display}:{lineno}: {problem}")
            return obj
        return dict(zip(info.columns, value, strict=True))

    def _table_iter(self, start: int) -> Iterator[dict[str, Any]]:
        if self._cursor is not None and self._cursor[0] == start:
            return self._cursor[1]
        info = self.info
        base = 0
        for n_file, (n, _) in enumerate(info.index):
            if start < base + n:
                return self._table_rows(n_file, start - base)
            base += n
        return iter(())

    def _table_rows(self, n_file: int, skip: int) -> Iterator[dict[str, Any]]:
        info = self.info
        for f in info.files[n_file:]:
            batches: Iterator[Any]
            if info.format == "parquet":  # whole row groups are skipped unread
                import pyarrow.parquet as pq

                pf = pq.ParquetFile(f)
                first = 0
                while first < pf.num_row_groups and skip >= (n := pf.metadata.row_group(first).num_rows):
                    skip -= n
                    first += 1
                batches = pf.iter_batches(batch_size=4096, row_groups=list(range(first, pf.num_row_groups)))
            else:
                batches = _batches(info.format, Path(f))
            for batch in batches:
                if skip >= batch.num_rows:
                    skip -= batch.num_rows
                    continue
                if skip:
                    batch = batch.slice(skip)
                    skip = 0
                yield from batch.to_pylist()


# One scan per source file per process: forked workers inherit the parent's.
_SCANS: dict[tuple[Any, ...], SourceInfo] = {}


def scan_cached(path: str | Path, fmt: str, key: str | None, base_dir: Path | None) -> SourceInfo:
    """:func:`scan`, remembered while the file's size and mtime stay the same."""
    p = Path(path)
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    try:
        st = os.stat(p)
        stamp: tuple[Any, ...] = (str(p.resolve()), fmt, key, st.st_size, st.st_mtime_ns, st.st_ino)
    except OSError:
        return scan(path, fmt, key, base_dir)
    if p.is_dir():  # a folder's files can change under an unchanged folder stamp
        stamp += tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(p.rglob("*")) if f.is_file())
    info = _SCANS.get(stamp)
    if info is None or info.display != str(path):
        info = _SCANS[stamp] = scan(path, fmt, key, base_dir)
    return info


__all__ = ["STRIDE", "BadRow", "Source", "SourceError", "SourceInfo", "scan", "scan_cached"]
