"""Recipe-specific additions to a verify report, picked by the shape of the records."""

from __future__ import annotations

from typing import Any, Protocol

from datamill.quality.stream import IntHistogram


class Extension(Protocol):
    name: str

    def add(self, rec: dict[str, Any]) -> None: ...

    def finish(
        self, tokens: dict[str, IntHistogram], num_items: int
    ) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        """(header fields, summary fields, gate results) to merge into the report."""


def for_record(rec: dict[str, Any], params: dict[str, Any]) -> Extension | None:
    if "teacher_text" in rec and "scenario" in rec and "prompt" in rec:
        from datamill.quality.extensions.contextual import ContextualReport

        return ContextualReport(int(params.get("integration_span_cap") or 3))
    return None
