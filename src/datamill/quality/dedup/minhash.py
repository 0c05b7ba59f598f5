"""Near duplicates by MinHash LSH (rensa): word 3-shingles, 128 permutations, 16 bands of 8 rows.

Candidates come from LSH buckets (a band's 8 hash values, hashed to 64 bits), linked within each
bucket by :func:`datamill.quality.dedup.base.window_candidates` (each member to the few before it
in row order, not all pairs); a candidate pair is kept only if its estimated Jaccard similarity
(the share of equal hash values) is at least ``threshold`` (default 0.8). Bucket membership
depends only on a text's own digest, and rows are in ``(slot, text)`` order, so the clusters do
not depend on the order texts arrive in. :meth:`MinHash.pairs_of` (used by verify) keeps the
all-pairs definition over rensa's own LSH index.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from datamill.errors import UsageError
from datamill.quality.dedup.base import keyed_pairs

_WORD = re.compile(r"\w+")
NUM_PERM = 128
BANDS = 16
ROWS = NUM_PERM // BANDS
SEED = 42
SIGN_BATCH = 4096


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


def signatures(texts: Sequence[str]) -> Any:
    """The MinHash digests of ``texts`` as an ``(n, 128)`` uint32 array (equal to :func:`signature`'s)."""
    import numpy as np
    from rensa import RMinHash

    out = np.empty((len(texts), NUM_PERM), dtype=np.uint32)
    for lo in range(0, len(texts), SIGN_BATCH):  # rensa hands rows back as Python ints: a batch at a time
        chunk = texts[lo : lo + SIGN_BATCH]
        matrix = RMinHash.digest_matrix_from_token_sets([shingles(t) for t in chunk], NUM_PERM, SEED)
        out[lo : lo + len(chunk)] = np.array(matrix.to_rows(), dtype=np.uint32).reshape(len(chunk), NUM_PERM)
    return out


def _mix(x: Any) -> Any:
    """splitmix64's finaliser over a uint64 array (wrapping arithmetic)."""
    import numpy as np

    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def band_keys(sigs: Any) -> Any:
    """One 64-bit key per band: ``(n, 16)`` uint64; equal bands give equal keys."""
    import numpy as np

    words = np.ascontiguousarray(sigs, dtype=np.uint32).view(np.uint64).reshape(len(sigs), BANDS, ROWS // 2)
    h: Any = np.broadcast_to(np.arange(BANDS, dtype=np.uint64), (len(sigs), BANDS))
    for r in range(ROWS // 2):
        h = _mix(h ^ words[:, :, r])
    return h


class MinHash:
    name = "minhash"
    bands = BANDS

    def __init__(self, threshold: float = 0.8) -> None:
        try:
            import rensa  # noqa: F401
        except ImportError:
            raise UsageError("minhash dedup needs rensa: pip install 'datamill[quality]'") from None
        self.threshold = threshold
        self.ident = f"minhash-v1-{NUM_PERM}-{BANDS}-{SEED}-w3"  # what a stored signature depends on

    def sign(self, texts: Sequence[str]) -> Any:
        return signatures(texts)

    def band_keys(self, sigs: Any) -> Any:
        return band_keys(sigs)

    def same(self, a: Any, b: Any) -> Any:
        """Which signature pairs have estimated Jaccard >= threshold (as ``RMinHash.jaccard``)."""
        return (a == b).sum(axis=1) / NUM_PERM >= self.threshold

    def pairs(self, texts: Sequence[str]) -> list[tuple[int, int]]:
        return keyed_pairs(self, texts)

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
