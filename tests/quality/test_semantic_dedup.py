"""Semantic dedup (issue 19): exact all-pairs for small N, clustered over memory-mapped
embeddings above it. The expected pairs are computed here with plain numpy, all-pairs."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from datamill.bench.dedup_bench import run_semantic_bench, semantic_texts
from datamill.quality.dedup import make_method, rejected_slots
from datamill.quality.dedup.semantic import EXACT_MAX, Semantic

THRESHOLD = 0.9
RECALL_FLOOR = 0.95  # documented in docs/quality.md


def exact_pairs(vecs: np.ndarray, threshold: float = THRESHOLD) -> set[tuple[int, int]]:
    """Every pair i < j with cosine >= threshold, by full row blocks of the similarity matrix."""
    out: set[tuple[int, int]] = set()
    for lo in range(0, len(vecs), 1000):
        sims = vecs[lo : lo + 1000] @ vecs.T
        for r, c in zip(*np.nonzero(sims >= threshold), strict=True):
            if c > r + lo:
                out.add((int(r + lo), int(c)))
    return out


def test_small_n_is_exact_all_pairs_and_the_default() -> None:
    texts = semantic_texts(3000, seed=1)
    m = make_method("semantic", THRESHOLD)
    assert isinstance(m, Semantic) and m.exact_max == EXACT_MAX == 20_000
    vecs = m.embed(texts)
    want = exact_pairs(vecs)
    assert len(want) >= 100  # the planted near-duplicates are there
    assert set(m.pairs(texts)) == want


def test_clustered_recall_against_all_pairs_on_20k_texts(tmp_path: Path) -> None:
    texts = semantic_texts(20_000)
    m = Semantic(THRESHOLD, exact_max=0, workdir=tmp_path)  # force the clustered path
    got = set(m.pairs(texts))
    # The embeddings went to a file, read through memory maps: unit float32 rows, one per text.
    stored = np.load(tmp_path / "embeddings.npy", mmap_mode="r")
    assert isinstance(stored, np.memmap) and stored.dtype == np.float32 and stored.shape == (20_000, 384)
    assert (tmp_path / "grouped.npy").stat().st_size > stored.nbytes  # own rows plus guests
    vecs = m.embed(texts)
    want = exact_pairs(vecs)
    assert len(want) >= 900
    assert got <= want  # nothing below the threshold
    recall = len(got & want) / len(want)
    assert recall >= RECALL_FLOOR, f"recall {recall:.4f} of {len(want)} pairs"


def test_clustered_answer_does_not_depend_on_input_order(tmp_path: Path) -> None:
    texts = semantic_texts(6000, seed=2)
    m = Semantic(THRESHOLD, exact_max=0, per_cluster=500)  # 12 clusters
    want = {frozenset((texts[a], texts[b])) for a, b in m.pairs(texts)}
    assert len(want) >= 200
    records = list(enumerate(texts))
    rejected = rejected_slots(records, m)
    for seed in range(2):
        perm = list(range(len(texts)))
        random.Random(seed).shuffle(perm)
        shuffled = [texts[i] for i in perm]
        assert {frozenset((shuffled[a], shuffled[b])) for a, b in m.pairs(shuffled)} == want
        assert rejected_slots([records[i] for i in perm], m) == rejected


def test_embed_to_returns_a_read_only_memmap(tmp_path: Path) -> None:
    m = Semantic(THRESHOLD, batch=7)
    texts = semantic_texts(50)
    stored = m.embed_to(texts, tmp_path / "e.npy")
    assert isinstance(stored, np.memmap) and not stored.flags.writeable
    assert np.allclose(stored, m.embed(texts), atol=1e-6)


@pytest.mark.parametrize("bad", [{"per_cluster": 0}, {"probes": 0}, {"batch": 0}, {"chunk": 0}])
def test_bad_sizes_are_refused(bad: dict[str, int]) -> None:
    from datamill.errors import UsageError

    with pytest.raises(UsageError, match="expected"):
        Semantic(THRESHOLD, **bad)  # type: ignore[arg-type]


@pytest.mark.scale
def test_clustered_memory_does_not_hold_the_embeddings() -> None:
    # 100K texts: 146 MB of embeddings; the clustered path's peak above the texts and model
    # (measured in a fresh process) stays well below that.
    r = run_semantic_bench(100_000, exact=False, timeout_s=600)
    grown = r["clustered"]["peak_rss_mb"] - r["clustered"]["before_mb"]
    assert grown < 0.75 * r["embeddings_mb"], r
