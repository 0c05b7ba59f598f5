"""Near duplicates by MinHash LSH (rensa): word 3-shingles, 128 permutations, 16 bands of 8 rows.

Candidates come from LSH buckets, then each candidate pair is kept only if its estimated
Jaccard similarity is at least ``threshold`` (default 0.8). Bucket membership depends only on a
text's own digest, so the pairs found do not depend on the order texts arrive in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from datamill.errors import UsageError

_WORD = re.compile(r"\w+")
NUM_PERM = 128
BANDS = 16
SEED = 42


# ASCII bytes: word characters ([A-Za-z0-9_]) lower-cased, every other byte a space. Splitting the
# translated text gives exactly ``\w+`` of the lower-cased text, twice as fast (most text is ASCII).
_ASCII_WORDS = bytes(
    c if (48 <= c <= 57 or 97 <= c <= 122 or c == 95) else c + 32 if 65 <= c <= 90 else 32 for c in range(128)
) + bytes(range(128, 256))


def shingles(text: str, k: int = 3) -> list[str]:
    w = text.encode().translate(_ASCII_WORDS).decode().split() if text.isascii() else _WORD.findall(text.lower())
    if len(w) < k:
        return [" ".join(w)] if w else [""]
    if k == 3:  # the common case, twice as fast as slicing
        return list(map(" ".join, zip(w, w[1:], w[2:], strict=False)))
    return [" ".join(w[i : i + k]) for i in range(len(w) - k + 1)]


def signature(text: str) -> Any:
    """The MinHash (rensa ``RMinHash``) of a text's word 3-shingles."""
    from rensa import RMinHash

    m = RMinHash(num_perm=NUM_PERM, seed=SEED)
    m.update(shingles(text))
    return m


class MinHash:
    name = "minhash"

    def __init__(self, threshold: float = 0.8) -> None:
        try:
            import rensa  # noqa: F401
        except ImportError:
            raise UsageError("minhash dedup needs rensa: pip install 'datamill[quality]'") from None
        self.threshold = threshold

    def pairs(self, texts: Sequence[str]) -> list[tuple[int, int]]:
        return self.pairs_of([signature(t) for t in texts])

    def pairs_of(self, hashes: Sequence[Any]) -> list[tuple[int, int]]:
        """:meth:`pairs` over signatures made by :func:`signature` (verify makes them as it streams)."""
        from rensa import RMinHashLSH

        lsh = RMinHashLSH(threshold=self.threshold, num_perm=NUM_PERM, num_bands=BANDS)
        for i, m in enumerate(hashes):
            lsh.insert(i, m)
        out = []
        for i, m in enumerate(hashes):
            for j in lsh.query(m):
                if j > i and m.jaccard(hashes[j]) >= self.threshold:
                    out.append((i, j))
        return out
