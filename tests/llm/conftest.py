"""A real fake server: `datamill bench serve-fake` in a subprocess on 127.0.0.1, stopped after."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from helpers import FakeServerProc


@pytest.fixture
def fake_server() -> Iterator[Callable[..., FakeServerProc]]:
    started: list[FakeServerProc] = []

    def start(*args: str) -> FakeServerProc:
        s = FakeServerProc(*args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
