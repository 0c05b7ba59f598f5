"""Shared fixtures: run the real CLI in a subprocess, write recipe files."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import FakeServerProc, cli_env

RunCli = Callable[..., subprocess.CompletedProcess]


@pytest.fixture(scope="session")
def run_cli() -> RunCli:
    """Run ``python -m datamill ARGS`` and return the completed process (text mode)."""

    def run(*args: str, cwd: str | Path | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "datamill", *args],
            capture_output=True,
            text=True,
            cwd=cwd,
            env=cli_env(),
            timeout=timeout,
        )

    return run


@pytest.fixture
def write_recipe(tmp_path: Path) -> Callable[[str, str], Path]:
    def write(text: str, name: str = "recipe.yaml") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p

    return write


@pytest.fixture
def fake_server() -> Iterator[Callable[..., FakeServerProc]]:
    """Start `datamill bench serve-fake` on 127.0.0.1 (a free port); stopped after the test."""
    started: list[FakeServerProc] = []

    def start(*args: str) -> FakeServerProc:
        s = FakeServerProc(*args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
