"""Parts that prove they are whole (issue 21): sizes and content hashes, checked on every read.

Each part's meta records the data file's byte size and its xxh3-128 hash, and a hash of the meta
itself (``meta_hash``), all committed with the part. :func:`read_part` is the one way a reader
gets a part's bytes: the meta must be there and unedited, the size must match (always: a stat),
and the hash must match (the bytes are hashed as they are read, at ~27 GB/s; see
docs/benchmarks.md). Anything else raises :class:`PartDamaged` with one line naming the part and
what is wrong. :func:`fsck` checks a whole run dir and, with ``repair``, moves damaged parts and
orphan metas into ``RUN/quarantine/`` so the next ``datamill run`` makes exactly those ranges
again, byte for byte (LLM columns from the cache).

A part is read whole into memory before any of it is used: a part is bounded by ``part_size``,
and nothing of a damaged part is ever passed on.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import xxhash

from datamill.errors import DataError, InputError, RunDirError
from datamill.store import atomic
from datamill.store.formats import read_lines
from datamill.store.rundir import PART_RE, Part, RunDir, part_stem

HASH_FIELD = "xxh3_128"
META_HASH_FIELD = "meta_hash"
_FIX = "run `datamill fsck DIR --repair`, then `datamill run` to make it again"


class PartDamaged(DataError):
    """A committed part (or its meta) that is not what was committed."""


def hash_file(path: Path) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class PartWriter:
    """One part file being written: records go through the format's sink into a temporary file;
    :meth:`publish` fsyncs it, records its size and content hash in the sealed meta, publishes
    the meta, then renames the data into place (a part exists completely or not at all).
    Use it through :func:`part_writer`, which removes the temporary file whatever happens."""

    def __init__(self, final: Path, fmt: str, compression: str) -> None:
        from datamill.store.formats import open_sink

        self.final = final
        self.tmp = atomic.temp_path(final)
        self._f = open(self.tmp, "wb")  # noqa: SIM115 - closed by publish() or discard()
        self._sink = open_sink(self._f, fmt, compression)
        self.records = 0

    def write(self, line: bytes, record: dict[str, Any]) -> None:
        self._sink.write(line, record)
        self.records += 1

    def publish(self, meta_path: Path, meta: dict[str, Any]) -> dict[str, Any]:
        """Commit the part with ``meta`` (its size, hash and meta hash filled in); returns that meta."""
        self._sink.close()
        self._f.flush()
        os.fsync(self._f.fileno())
        size = self._f.tell()
        self._f.close()
        sealed = seal({**meta, "bytes": size, HASH_FIELD: hash_file(self.tmp)})  # from the page cache
        atomic.write_bytes(meta_path, orjson.dumps(sealed))
        atomic.publish(self.tmp, self.final)
        return sealed

    def discard(self) -> None:
        if not self._f.closed:
            self._f.close()
        self.tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def part_writer(final: Path, fmt: str, compression: str) -> Iterator[PartWriter]:
    writer = PartWriter(final, fmt, compression)
    try:
        yield writer
    finally:
        writer.discard()


def seal(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with its own hash added (so an edited count is caught)."""
    body = {k: v for k, v in meta.items() if k != META_HASH_FIELD}
    return {**body, META_HASH_FIELD: xxhash.xxh3_128(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()}


def checked_meta(part: Part) -> dict[str, Any]:
    """The part's meta, refused when it is missing, unreadable, edited or for other slots."""
    name = part.path.name
    try:
        raw = part.meta_path.read_bytes()
    except FileNotFoundError:
        raise PartDamaged(f"{part.path}: damaged: its meta file {part.meta_path.name} is missing; {_FIX}") from None
    except OSError as exc:
        raise PartDamaged(f"{part.path}: damaged: cannot read its meta: {exc.strerror}") from None
    try:
        meta = orjson.loads(raw)
        if not isinstance(meta, dict):
            raise TypeError("not an object")
    except (orjson.JSONDecodeError, TypeError):
        raise PartDamaged(f"{part.meta_path}: damaged: the meta is not valid JSON; {_FIX}") from None
    missing = [k for k in ("bytes", HASH_FIELD, META_HASH_FIELD) if k not in meta] if part.sealed else []
    if missing:
        raise PartDamaged(f"{part.meta_path}: damaged: the meta lacks {', '.join(missing)}; {_FIX}")
    types = {"bytes": int, "records": int, HASH_FIELD: str, META_HASH_FIELD: str, "slots_failed": list, "range": list}
    bad = next((k for k, t in types.items() if k in meta and not isinstance(meta[k], t)), None)
    if bad is not None:
        raise PartDamaged(
            f"{part.meta_path}: damaged: {bad} is {type(meta[bad]).__name__}, not {types[bad].__name__}; {_FIX}"
        )
    if META_HASH_FIELD in meta and seal(meta)[META_HASH_FIELD] != meta[META_HASH_FIELD]:
        raise PartDamaged(f"{part.meta_path}: damaged: the meta was edited (its hash does not match); {_FIX}")
    if meta.get("range") != [part.start, part.end]:
        raise PartDamaged(f"{part.meta_path}: damaged: range {meta.get('range')} is not {name}'s; {_FIX}")
    return dict(meta)


def check_size(part: Part, meta: dict[str, Any]) -> None:
    want = meta.get("bytes")
    if want is None:
        return  # a part committed before sizes were recorded
    try:
        size = part.path.stat().st_size
    except FileNotFoundError:
        raise PartDamaged(f"{part.path}: damaged: the file disappeared while reading") from None
    if size != want:
        what = "truncated" if size < want else "longer than committed"
        raise PartDamaged(f"{part.path}: damaged: {what}: {size:,} bytes, the meta says {want:,}; {_FIX}")


def read_part(part: Part, verify_hash: bool = True) -> tuple[bytes, dict[str, Any]]:
    """The part's bytes and meta, checked: meta, size, and (unless told not to) content hash."""
    meta = checked_meta(part)
    check_size(part, meta)
    try:
        data = part.path.read_bytes()
    except OSError as exc:
        raise PartDamaged(f"{part.path}: damaged: cannot read: {exc.strerror}") from None
    if "bytes" in meta and len(data) != meta["bytes"]:
        raise PartDamaged(f"{part.path}: damaged: {len(data):,} bytes read, the meta says {meta['bytes']:,}; {_FIX}")
    if verify_hash and HASH_FIELD in meta and xxhash.xxh3_128(data).hexdigest() != meta[HASH_FIELD]:
        raise PartDamaged(f"{part.path}: damaged: content hash mismatch (bytes changed since commit); {_FIX}")
    return data, meta


def lines_of(part: Part, data: bytes, meta: dict[str, Any] | None = None) -> Iterator[bytes]:
    """JSONL lines of a part's (checked) bytes, whatever its format; the count is checked too."""
    n = 0
    try:
        for line in read_lines(io.BytesIO(data), str(part.path)):
            n += 1
            yield line
    except (InputError, GeneratorExit):
        raise
    except Exception as exc:  # zstd, Arrow: whatever a damaged file makes them raise
        raise PartDamaged(f"{part.path}: damaged: cannot decode: {type(exc).__name__}: {exc}; {_FIX}") from None
    if meta is not None and n != meta.get("records", n):
        raise PartDamaged(f"{part.path}: damaged: {n:,} records, the meta says {meta['records']:,}; {_FIX}")


def part_lines(part: Part, verify_hash: bool = True) -> Iterator[bytes]:
    """Checked JSONL lines of one committed part."""
    data, meta = read_part(part, verify_hash)
    yield from lines_of(part, data, meta)


def quick_check(part: Part) -> str | None:
    """Meta and size only (a stat, no read): the reason a part is damaged, or None."""
    try:
        check_size(part, checked_meta(part))
    except PartDamaged as exc:
        return str(exc)
    return None


@dataclass
class FsckReport:
    parts: int = 0
    damaged: list[tuple[Path, str]] = field(default_factory=list)
    orphan_metas: list[Path] = field(default_factory=list)
    missing: list[tuple[int, int]] = field(default_factory=list)
    quarantined: list[Path] = field(default_factory=list)
    planned: int = 0

    @property
    def clean(self) -> bool:
        return not self.damaged and not self.orphan_metas


def _quarantine(rd: RunDir, path: Path) -> Path:
    qdir = rd.path / "quarantine"
    qdir.mkdir(exist_ok=True)
    dest = qdir / path.name
    k = 1
    while dest.exists():
        dest = qdir / f"{path.name}.{k}"
        k += 1
    os.replace(path, dest)
    return dest


def fsck(path: str | Path, repair: bool = False) -> FsckReport:
    """Check every part and meta of a run dir; with ``repair``, quarantine what is damaged."""
    from datamill.store.reader import expected_gaps

    rd = RunDir(path)
    manifest = rd.manifest()  # refuses a dir that is not a run dir
    if repair and rd.running_shards():
        raise RunDirError(f"{rd.path}: a run is writing this dir; stop it before `fsck --repair`")
    report = FsckReport(planned=int(manifest["plan"]["slots"]))
    parts = rd.parts()
    report.parts = len(parts)
    stems = {part_stem(p.start, p.end) for p in parts}
    for part in parts:
        try:
            for _ in part_lines(part):
                pass
        except PartDamaged as exc:
            report.damaged.append((part.path, str(exc)))
    if rd.parts_dir.is_dir():
        for entry in sorted(os.scandir(rd.parts_dir), key=lambda e: e.name):
            if entry.name.endswith(".meta.json") and entry.name.removesuffix(".meta.json") not in stems:
                report.orphan_metas.append(Path(entry.path))
    damaged_paths = {p for p, _ in report.damaged}
    report.missing = expected_gaps(rd, [p for p in parts if p.path not in damaged_paths])
    if repair:
        for part_path, _ in report.damaged:
            m = PART_RE.match(part_path.name)
            assert m is not None
            meta = part_path.with_name(part_stem(int(m.group(1)), int(m.group(2))) + ".meta.json")
            report.quarantined.append(_quarantine(rd, part_path))
            if meta.exists():
                report.quarantined.append(_quarantine(rd, meta))
        for meta in report.orphan_metas:
            report.quarantined.append(_quarantine(rd, meta))
        rd.log_event("fsck", quarantined=[str(p.name) for p in report.quarantined])
    return report
