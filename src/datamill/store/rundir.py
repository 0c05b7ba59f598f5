"""The run dir: its layout, manifest, committed parts and event log.

::

    RUN/
      manifest.json        recipe as loaded, recipe hash, plan summary, datamill version
      parts/               part-START-END.{jsonl,jsonl.zst,parquet} + part-START-END.meta.json
      logs/run.jsonl       run events: start, part, slot_failed, stop
      reports/             written by quality tools

A part is committed when its data file exists. Its meta file is published first, so a committed
part always has one; a meta file without data is a leftover of a killed writer and is ignored.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from datamill.errors import InputError
from datamill.store import atomic

MANIFEST = "manifest.json"
PART_INTEGRITY = "xxh3_128+meta_hash"  # what a manifest promises about its parts' metas
PART_RE = re.compile(r"^part-(\d+)-(\d+)(\.jsonl|\.jsonl\.zst|\.parquet)$")


def utc_now() -> str:
    """ISO-8601 UTC timestamp for logs (never for data)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def part_stem(start: int, end: int) -> str:
    return f"part-{start:012d}-{end:012d}"


@dataclass(frozen=True)
class Part:
    """A committed part: slots ``[start, end)`` in ``path``, with stats in ``meta_path``."""

    start: int
    end: int
    path: Path
    # The run dir's manifest promises sealed metas (size, content hash, meta hash): one without
    # them is damaged, not an old-format meta (run dirs made before those fields existed are not).
    sealed: bool = False

    @property
    def meta_path(self) -> Path:
        return self.path.with_name(part_stem(self.start, self.end) + ".meta.json")

    def meta(self) -> dict[str, Any]:
        try:
            return dict(orjson.loads(self.meta_path.read_bytes()))
        except (OSError, orjson.JSONDecodeError) as exc:
            raise InputError(f"{self.meta_path}: unreadable part meta: {exc}") from exc


class RunDir:
    """Paths and readers of one run dir."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.parts_dir = self.path / "parts"
        self.logs_dir = self.path / "logs"
        self.reports_dir = self.path / "reports"
        self.cache_dir = self.path / "cache"
        self.manifest_path = self.path / MANIFEST
        self.events_path = self.logs_dir / "run.jsonl"

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def create(self, manifest: dict[str, Any]) -> None:
        """Make the layout and publish the manifest (if no other writer did first)."""
        for d in (self.parts_dir, self.logs_dir, self.reports_dir, self.cache_dir):
            d.mkdir(parents=True, exist_ok=True)
        if not self.manifest_path.exists():
            atomic.write_bytes(self.manifest_path, orjson.dumps(manifest, option=orjson.OPT_INDENT_2))

    def manifest(self) -> dict[str, Any]:
        try:
            return dict(orjson.loads(self.manifest_path.read_bytes()))
        except FileNotFoundError:
            raise InputError(f"{self.path}: not a datamill run dir (no {MANIFEST})") from None
        except (OSError, orjson.JSONDecodeError) as exc:
            raise InputError(f"{self.manifest_path}: unreadable manifest: {exc}") from exc

    def parts(self) -> list[Part]:
        """Committed parts in slot order."""
        if not self.parts_dir.is_dir():
            return []
        found = []
        sealed = self.manifest_path.is_file() and self.manifest().get("part_integrity") == PART_INTEGRITY
        for entry in os.scandir(self.parts_dir):
            m = PART_RE.match(entry.name)
            if m:
                found.append(Part(int(m.group(1)), int(m.group(2)), Path(entry.path), sealed))
        found.sort(key=lambda p: (p.start, p.end))
        return found

    def running_shards(self) -> list[str]:
        """The shard locks (``logs/shard-S-of-N.lock``) a live process holds now."""
        import fcntl

        held: list[str] = []
        if not self.logs_dir.is_dir():
            return held
        for p in sorted(self.logs_dir.glob("shard-*.lock")):
            fd = os.open(p, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.append(p.stem)
            finally:
                os.close(fd)  # closing releases a lock taken here
        return held

    def log_event(self, event: str, **fields: Any) -> None:
        """Append one event line to ``logs/run.jsonl`` (one write, so lines never interleave)."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        line = orjson.dumps({"ts": utc_now(), "event": event, **fields}, option=orjson.OPT_APPEND_NEWLINE)
        fd = os.open(self.events_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def events(self) -> Iterator[dict[str, Any]]:
        if not self.events_path.is_file():
            return
        with open(self.events_path, "rb") as f:
            for line in f:
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # a line cut by a crash; the rest stays readable
