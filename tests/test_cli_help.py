"""Every verb's ``--help`` prints (a stray ``%`` in a help string made ``datamill bench --help`` crash)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from datamill.cli.main import build_parser


def parsers(p: argparse.ArgumentParser, path: str = "datamill") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, f"{path} {name}")


def test_every_help_page_formats() -> None:
    seen = []
    for path, p in parsers(build_parser()):
        text = p.format_help()
        assert text.startswith("usage:"), path
        seen.append(path)
    # The walk reached the nested verbs, not only the top level.
    assert "datamill bench verify" in seen and "datamill run" in seen and len(seen) > 20
