"""What the engine tells a progress display; the CLI decides how to show it."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, total_slots: int, done_slots: int, done_records: int) -> None: ...

    def advance(self, slots: int, records: int) -> None: ...

    def note(self, failed: int, requests: int, tokens: float, cost_usd: float) -> None:
        """Failed slots, and LLM requests, tokens and cost of this invocation, so far."""

    def finish(self) -> None: ...


class NullProgress:
    """Shows nothing (library use and tests)."""

    def start(self, total_slots: int, done_slots: int, done_records: int) -> None:
        pass

    def advance(self, slots: int, records: int) -> None:
        pass

    def note(self, failed: int, requests: int, tokens: float, cost_usd: float) -> None:
        pass

    def finish(self) -> None:
        pass
