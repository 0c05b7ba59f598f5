"""Local repairs of model JSON (after the cache, before any repair prompt): each reply in the table
parses to the value written beside it, with the repair named; hopeless replies stay invalid."""

from __future__ import annotations

from typing import Any

import pytest

from datamill.llm.structured import parse_json

CASES: list[tuple[str, Any, list[str]]] = [
    ('{"a": 1}', {"a": 1}, []),
    ('```json\n{"a": 1}\n```', {"a": 1}, ["strip_fences"]),
    ('Sure! {"a": [1, 2]} Hope that helps.', {"a": [1, 2]}, ["extract_object"]),
    ('{"a": [1, 2,],}', {"a": [1, 2]}, ["trailing_comma"]),
    # A small model under a grammar writes raw newlines and tabs inside strings.
    ('{"input": "line one\nline\ttwo", "n": 2}', {"input": "line one\nline\ttwo", "n": 2}, ["control_chars"]),
    ("{'a': 'b'}", {"a": "b"}, ["single_quotes"]),
]


@pytest.mark.parametrize(("reply", "value", "repairs"), CASES)
def test_local_repairs_parse_to_the_written_value(reply: str, value: Any, repairs: list[str]) -> None:
    p = parse_json(reply)
    assert p.ok and p.value == value and p.repairs == repairs


@pytest.mark.parametrize("reply", ["", "no json here", '{"a": ', '{"a": "unterminated}'])
def test_hopeless_replies_stay_invalid(reply: str) -> None:
    p = parse_json(reply)
    assert not p.ok and p.error == "invalid_json"
