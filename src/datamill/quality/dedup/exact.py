"""Exact duplicates: the same text after normalisation (case, whitespace, punctuation)."""

from __future__ import annotations

import re

from datamill.quality.dedup.base import Hashed

_SPACE = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")


def normalise(text: str) -> str:
    return _SPACE.sub(" ", _PUNCT.sub("", text.lower())).strip()


class Exact(Hashed):
    name = "exact"

    def key_text(self, text: str) -> str:
        return normalise(text)
