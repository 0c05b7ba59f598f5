"""Structural duplicates (seed 001): the same shape once numbers, names and quoted values are masked.

"Compute the mean of [3, 5, 9]" and "Compute the mean of [1, 2, 4]" share a shape; so do two
cases that differ only in a person's name or a quoted string.
"""

from __future__ import annotations

import re

from datamill.quality.dedup.base import Hashed

_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'|`[^`]*`")
_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)*(?:[eE][-+]?\d+)?")
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]+\b")
_SPACE = re.compile(r"\s+")


def shape(text: str) -> str:
    """The text with quoted values -> Q, numbers -> N, capitalised words inside a sentence -> X."""
    t = _QUOTED.sub("Q", text)
    t = _NUMBER.sub("N", t)
    t = _NAME.sub("X", t)
    return _SPACE.sub(" ", t).strip().lower()


class Structural(Hashed):
    name = "structural"

    def key_text(self, text: str) -> str:
        return shape(text)
