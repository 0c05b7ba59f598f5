"""The LLM response cache: raw response bodies by request hash, in SQLite (``RUN/cache/llm.sqlite``).

"A cache you never need to invalidate": the key is a versioned hash of the rendered request, the
model identity and the sampling parameters (all inside the payload, seed included) and nothing
else — not concurrency, timeouts or retries. The value is the raw body, so parsing, validation
and repair run after the cache and a fixed parser re-reads old responses without a new call.
Several worker processes share one file (WAL mode).
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson

CACHE_VERSION = b"datamill-llm-cache-v1"


def request_key(identity: str, payload: dict[str, Any]) -> str:
    h = hashlib.sha256(CACHE_VERSION)
    h.update(b"\0" + identity.encode() + b"\0")
    h.update(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS))
    return h.hexdigest()


class ResponseCache:
    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=60)
        self._db.execute("PRAGMA busy_timeout=60000")
        # Worker processes open the file at the same moment; switching to WAL can answer "locked"
        # without waiting, so the set-up is retried briefly.
        for attempt in range(100):
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, body BLOB NOT NULL)")
                break
            except sqlite3.OperationalError:
                if attempt == 99:
                    raise
                time.sleep(0.05)
        self._db.execute("PRAGMA synchronous=NORMAL")  # survives a killed process; an OS crash costs re-requests
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT body FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return bytes(row[0])

    def put(self, key: str, body: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO responses (key, body) VALUES (?, ?)", (key, body))

    def put_many(self, rows: Any) -> None:
        """Insert ``(key, body)`` pairs in one transaction (journals folded in by the driver)."""
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR REPLACE INTO responses (key, body) VALUES (?, ?)", rows)
        self._db.execute("COMMIT")

    def checkpoint(self) -> None:
        """Move the WAL into the main file, so the file alone holds every response."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        self._db.close()
