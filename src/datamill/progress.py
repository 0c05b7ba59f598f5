"""Progress displays: a rich bar on a terminal or in a notebook, plain periodic lines otherwise.

Used by the Python API and the CLI alike; the engine only calls the ``Progress`` protocol.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def noted(failed: int, requests: int, tokens: float, cost_usd: float) -> str:
    """``, 3 failed, 1,200 requests, 84,000 tokens, $0.0420`` (the parts that are not zero)."""
    out = f", {failed:,} failed" if failed else ""
    if requests:
        out += f", {requests:,} requests, {int(tokens):,} tokens"
        if cost_usd:
            out += f", ${cost_usd:,.4f}"
    return out


class RichProgress:
    """A live bar with slots, records, rate and ETA (for terminals)."""

    def __init__(self, label: str, stream: TextIO | None = None, console: Console | None = None) -> None:
        self.label = label
        self._records = 0
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("slots  {task.fields[records]:,} records  {task.fields[rate]}{task.fields[extra]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console or Console(file=stream or sys.stderr),
            transient=False,
        )
        self._task: TaskID | None = None
        self._t0 = 0.0
        self._new_records = 0

    def start(self, total_slots: int, done_slots: int, done_records: int) -> None:
        self._records = done_records
        self._t0 = time.monotonic()
        self._progress.start()
        self._task = self._progress.add_task(
            self.label, total=total_slots, completed=done_slots, records=done_records, rate="", extra=""
        )

    def advance(self, slots: int, records: int) -> None:
        assert self._task is not None
        self._records += records
        self._new_records += records
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        rate = f"{self._new_records / elapsed:,.0f} rec/s"
        self._progress.update(self._task, advance=slots, records=self._records, rate=rate)

    def note(self, failed: int, requests: int, tokens: float, cost_usd: float) -> None:
        assert self._task is not None
        self._progress.update(self._task, extra=noted(failed, requests, tokens, cost_usd))

    def finish(self) -> None:
        self._progress.stop()


class PlainProgress:
    """One log line every ``interval`` seconds: for logs, CI and pipes."""

    def __init__(self, label: str, stream: TextIO | None = None, interval: float = 10.0) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.interval = interval
        self.total = self.done = self.records = 0
        self.extra = ""
        self._new_slots = self._new_records = 0
        self._t0 = self._last = 0.0

    def start(self, total_slots: int, done_slots: int, done_records: int) -> None:
        self.total, self.done, self.records = total_slots, done_slots, done_records
        self._t0 = self._last = time.monotonic()
        self._line("start")

    def advance(self, slots: int, records: int) -> None:
        self.done += slots
        self.records += records
        self._new_slots += slots
        self._new_records += records
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._line("progress")

    def note(self, failed: int, requests: int, tokens: float, cost_usd: float) -> None:
        self.extra = noted(failed, requests, tokens, cost_usd)

    def finish(self) -> None:
        self._line("end")

    def _line(self, what: str) -> None:
        elapsed = time.monotonic() - self._t0
        rate = self._new_records / elapsed if elapsed > 0 else 0.0
        slot_rate = self._new_slots / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / slot_rate if slot_rate > 0 else None
        pct = 100.0 * self.done / self.total if self.total else 100.0
        print(
            f"[datamill] {self.label} {what}: {self.done:,}/{self.total:,} slots ({pct:.1f}%), "
            f"{self.records:,} records, {rate:,.0f} records/s, elapsed {fmt_duration(elapsed)}, "
            f"ETA {fmt_duration(eta)}{self.extra}",
            file=self.stream,
            flush=True,
        )


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where rich renders its bar as a live HTML widget)."""
    try:
        from IPython import get_ipython  # type: ignore[attr-defined]
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def make_progress(mode: str | bool, label: str) -> Any:
    """A progress display: ``auto`` (a rich bar in a notebook or on a terminal, plain lines
    otherwise), ``rich``, ``plain``, ``none``; True means ``auto`` and False ``none``."""
    from datamill.engine.progress import NullProgress

    if mode is True:
        mode = "auto"
    if mode is False or mode == "none":
        return NullProgress()
    if mode == "auto":
        if in_notebook():
            return RichProgress(label, console=Console())  # rich detects Jupyter and renders HTML
        mode = "rich" if sys.stderr.isatty() else "plain"
    if mode == "rich":
        return RichProgress(label)
    interval = float(os.environ.get("DATAMILL_PROGRESS_INTERVAL", "10"))
    return PlainProgress(label, interval=interval)
