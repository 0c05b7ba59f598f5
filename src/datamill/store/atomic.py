"""Crash-safe file commits: write to a temporary name, fsync, rename, fsync the directory.

A file committed through here exists completely or not at all, whatever moment the process is
killed at. Temporary names carry the writer's pid and a random suffix, so two writers of the same
file (a resumed run racing an orphaned worker) never share a temporary file; the rename makes
one of two identical results win.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TMP_MARK = ".tmp-"


def temp_path(final: Path) -> Path:
    """A fresh temporary name beside ``final``, hidden from part listings."""
    return final.with_name(f".{final.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """Make a fully written and fsynced ``tmp`` visible as ``final``, durably."""
    os.replace(tmp, final)
    fsync_dir(final.parent)


def write_bytes(final: Path, data: bytes) -> None:
    """Atomically replace ``final`` with ``data``."""
    tmp = temp_path(final)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
