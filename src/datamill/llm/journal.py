"""Per-range journals: how LLM columns write their cache and attempt log on a cluster.

SQLite's locking does not hold across hosts on a shared filesystem (NFS, Lustre, CephFS), and
appends of two hosts to one file may overwrite each other. So under the Ray executor a range's
task never writes a shared file: its new responses go to ``cache/ranges/STEM.TOKEN.bin`` and its
attempt lines to ``logs/attempts.d/STEM.TOKEN.jsonl``, files that exactly one process (the task
running that range, attempt ``TOKEN``) ever writes. ``cache/llm.sqlite`` is only read while tasks
run (checkpointed first, opened immutable), and one process, the driver, folds the journals in:
the attempt lines when the range's part commits, the responses into ``llm.sqlite`` when no task
runs (at the start and the end of every invocation, whatever its executor). A range re-run after
a kill reads the journals of its earlier attempts first, so nothing answered is asked again.

A journal record is ``MAGIC key(64) length(8) crc32(4) body``; a record cut by a kill fails its
length or checksum and is ignored (it was never answered as far as the run knows).
"""

from __future__ import annotations

import os
import sqlite3
import struct
import zlib
from pathlib import Path
from typing import Any

import orjson

from datamill.llm.cache import ResponseCache
from datamill.store.rundir import utc_now

MAGIC = b"DMJ1"
_HEAD = struct.Struct(">64sQI")
CACHE_JOURNALS = "ranges"  # under RUN/cache/
ATTEMPT_JOURNALS = "attempts.d"  # under RUN/logs/


def read_journal(path: Path) -> dict[str, bytes]:
    """The whole records of one cache journal (a torn tail is left out)."""
    out: dict[str, bytes] = {}
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return out
    at, step = 0, len(MAGIC) + _HEAD.size
    while at + step <= len(data) and data[at : at + len(MAGIC)] == MAGIC:
        key, n, crc = _HEAD.unpack_from(data, at + len(MAGIC))
        body = data[at + step : at + step + n]
        if len(body) < n or zlib.crc32(body) != crc:
            break
        out[key.decode()] = body
        at += step + n
    return out


class RangeJournal:
    """The cache and attempt log of the range this process runs (one range at a time).

    ``cache`` answers from this range's journals (earlier attempts included), then from
    ``llm.sqlite`` read-only; ``log`` appends to this attempt's own file.
    """

    def __init__(self, run_dir: str | Path, run_id: str) -> None:
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.cache_dir = self.run_dir / "cache" / CACHE_JOURNALS
        self.log_dir = self.run_dir / "logs" / ATTEMPT_JOURNALS
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        main = self.run_dir / "cache" / "llm.sqlite"
        self._main: sqlite3.Connection | None = None
        if main.is_file():
            # Nothing writes llm.sqlite while tasks run: immutable means no locks and no -shm file.
            self._main = sqlite3.connect(f"file:{main}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        self._mem: dict[str, bytes] = {}
        self._cache_fd = self._log_fd = -1
        self.hits = self.misses = 0
        self.cache = self  # the ResponseCache face (get/put)
        self.log = _Log(self)  # the AttemptLog face (write)

    def begin(self, stem: str, token: str) -> None:
        """Start attempt ``token`` of the range whose part is ``stem``."""
        self.end()
        self._mem = {}
        for p in sorted(self.cache_dir.glob(f"{stem}.*.bin")):
            self._mem.update(read_journal(p))
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self._cache_fd = os.open(self.cache_dir / f"{stem}.{token}.bin", flags, 0o644)
        self._log_fd = os.open(self.log_dir / f"{stem}.{token}.jsonl", flags, 0o644)

    def end(self) -> None:
        for fd in (self._cache_fd, self._log_fd):
            if fd >= 0:
                os.close(fd)
        self._cache_fd = self._log_fd = -1

    # -- the ResponseCache face ----------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        body = self._mem.get(key)
        if body is None and self._main is not None:
            row = self._main.execute("SELECT body FROM responses WHERE key = ?", (key,)).fetchone()
            body = None if row is None else bytes(row[0])
        if body is None:
            self.misses += 1
            return None
        self.hits += 1
        return body

    def put(self, key: str, body: bytes) -> None:
        self._mem[key] = body
        # One write per record: a kill leaves whole records and at most one torn tail.
        os.write(self._cache_fd, MAGIC + _HEAD.pack(key.encode(), len(body), zlib.crc32(body)) + body)

    def __len__(self) -> int:
        return len(self._mem)

    def close(self) -> None:
        self.end()
        if self._main is not None:
            self._main.close()
            self._main = None


class _Log:
    def __init__(self, journal: RangeJournal) -> None:
        self._j = journal

    def write(self, **fields: Any) -> None:
        line = orjson.dumps({"ts": utc_now(), "run_id": self._j.run_id, **fields}, option=orjson.OPT_APPEND_NEWLINE)
        os.write(self._j._log_fd, line)

    def close(self) -> None:
        pass


def fold_attempts(run_dir: str | Path, stem: str | None = None) -> int:
    """Append the attempt journals (of ``stem``'s range, or all) to ``logs/attempts.jsonl`` and
    delete them; returns the lines moved. Run by the one process that owns the run's logs."""
    log_dir = Path(run_dir) / "logs" / ATTEMPT_JOURNALS
    if not log_dir.is_dir():
        return 0
    n = 0
    paths = sorted(log_dir.glob(f"{stem}.*.jsonl" if stem else "*.jsonl"))
    if not paths:
        return 0
    fd = os.open(Path(run_dir) / "logs" / "attempts.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for p in paths:
            data = p.read_bytes()
            data = data[: data.rfind(b"\n") + 1]  # a line cut by a kill is left out
            if data:
                os.write(fd, data)
                n += data.count(b"\n")
            p.unlink()
    finally:
        os.close(fd)
    return n


def fold_cache(run_dir: str | Path, checkpoint: bool = True) -> int:
    """Move every cache journal into ``cache/llm.sqlite`` and delete it; with ``checkpoint``, move
    the WAL into the file, so the file alone holds every response (tasks that read it immutable,
    on other hosts too, see them all). Returns the responses moved. Run only while no task of the
    run dir runs."""
    cache_dir = Path(run_dir) / "cache"
    paths = sorted((cache_dir / CACHE_JOURNALS).glob("*.bin")) if (cache_dir / CACHE_JOURNALS).is_dir() else []
    db = cache_dir / "llm.sqlite"
    if not paths and not (checkpoint and db.is_file()):
        return 0
    cache = ResponseCache(db)
    n = 0
    try:
        for p in paths:
            rows = read_journal(p)
            if rows:
                cache.put_many(rows.items())
                n += len(rows)
            p.unlink()
        if checkpoint:
            cache.checkpoint()
    finally:
        cache.close()
    return n
