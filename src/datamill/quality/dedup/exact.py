"""Exact duplicates: the same text after normalisation (case, whitespace, punctuation)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from datamill.quality.dedup.base import hash_pairs

_SPACE = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")


def normalise(text: str) -> str:
    return _SPACE.sub(" ", _PUNCT.sub("", text.lower())).strip()


class Exact:
    name = "exact"

    def pairs(self, texts: Sequence[str]) -> list[tuple[int, int]]:
        return hash_pairs([hashlib.blake2b(normalise(t).encode(), digest_size=16).hexdigest() for t in texts])
