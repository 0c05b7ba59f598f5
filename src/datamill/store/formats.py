"""Part file formats: JSONL (plain or zstd) and Parquet, each a sink and a line reader.

JSONL is the canonical form: records are serialised once, by orjson, in the order their fields
were built, so the same records always give the same bytes. Parquet parts are read back into the
same dicts and serialised the same way.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from datamill.errors import InputError

_DUMP_OPTS = orjson.OPT_APPEND_NEWLINE


def dumps_line(record: dict[str, Any]) -> bytes:
    """One JSONL line for ``record``, newline included."""
    return orjson.dumps(record, option=_DUMP_OPTS)


def suffix(fmt: str, compression: str) -> str:
    """File suffix of a part in this format."""
    if fmt == "parquet":
        return ".parquet"
    return ".jsonl.zst" if compression == "zstd" else ".jsonl"


class Sink(Protocol):
    """Takes serialised records for one part file."""

    def write(self, line: bytes, record: dict[str, Any]) -> None: ...

    def close(self) -> None:
        """Flush everything into the underlying file (which the caller fsyncs and closes)."""


class JsonlSink:
    def __init__(self, f: IO[bytes], compression: str) -> None:
        self._f = f
        self._z: Any = None
        self._buf: list[bytes] = []
        self._size = 0
        if compression == "zstd":
            import zstandard

            self._z = zstandard.ZstdCompressor(level=3).stream_writer(f, closefd=False)

    def write(self, line: bytes, record: dict[str, Any]) -> None:
        self._buf.append(line)
        self._size += len(line)
        if self._size >= 1 << 20:
            self._flush()

    def _flush(self) -> None:
        data = b"".join(self._buf)
        self._buf.clear()
        self._size = 0
        (self._z or self._f).write(data)

    def close(self) -> None:
        self._flush()
        if self._z is not None:
            self._z.close()  # ends the zstd frame; closefd=False leaves the file to the caller


class ParquetSink:
    """Buffers one part's records (a part is bounded by ``part_size``) and writes one table."""

    def __init__(self, f: IO[bytes], compression: str) -> None:
        self._f = f
        self._rows: list[dict[str, Any]] = []
        self._compression = "zstd" if compression == "zstd" else "none"

    def write(self, line: bytes, record: dict[str, Any]) -> None:
        self._rows.append(record)

    def close(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(self._rows) if self._rows else pa.table({})
        pq.write_table(table, self._f, compression=self._compression)
        self._rows.clear()


def open_sink(f: IO[bytes], fmt: str, compression: str) -> Sink:
    if fmt == "parquet":
        return ParquetSink(f, compression)
    return JsonlSink(f, compression)


def read_lines(stream: IO[bytes], name: str) -> Iterator[bytes]:
    """JSONL lines of one part's bytes (a file or a buffer), by the format its ``name`` says."""
    if name.endswith(".jsonl"):
        yield from stream
    elif name.endswith(".jsonl.zst"):
        import zstandard

        with zstandard.ZstdDecompressor().stream_reader(stream) as z:
            yield from io.BufferedReader(z)  # type: ignore[arg-type]
    elif name.endswith(".parquet"):
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(stream).iter_batches():
            for rec in batch.to_pylist():
                yield dumps_line(rec)
    else:
        raise InputError(f"{name}: not a part file (.jsonl, .jsonl.zst or .parquet)")


def iter_lines(path: Path) -> Iterator[bytes]:
    """JSONL lines of one part file, whatever its format."""
    try:
        with open(path, "rb") as f:
            yield from read_lines(f, str(path))
    except OSError as exc:
        raise InputError(f"{path}: cannot read part: {exc}") from exc
