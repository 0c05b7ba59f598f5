"""Scale (marked; `make test-scale`): staged dedup of 1M texts in bounded memory (issue 19).

Each side runs in a fresh interpreter (its own peak RSS). Recall is checked here, with exact
Jaccard of word 3-shingles computed by this file, not by datamill.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from datamill.bench.dedup_bench import in_collapse, is_planted, planted_source, run_side, synth_texts

pytestmark = pytest.mark.scale

N = 1_000_000
RSS_BOUND_MB = 1024


def jaccard(a: str, b: str) -> float:
    def sh(t: str) -> set[tuple[str, ...]]:
        w = re.findall(r"\w+", t.lower())
        return {tuple(w[i : i + 3]) for i in range(len(w) - 2)}

    x, y = sh(a), sh(b)
    return len(x & y) / len(x | y)


def answer(root: Path) -> dict[int, int]:
    arr = np.load(root / "answer.npy")
    return dict(zip(arr[:, 0].tolist(), arr[:, 1].tolist(), strict=True))


@pytest.mark.timeout(1800)
def test_1m_texts_bounded_memory_every_planted_pair_found_and_time_per_text(tmp_path: Path) -> None:
    staged = run_side("staged", N, root=str(tmp_path), memory_mb=512)
    assert staged["peak_rss_mb"] <= RSS_BOUND_MB, staged
    got = answer(tmp_path)
    texts = synth_texts(0, N, N)
    dups = np.flatnonzero(is_planted(np.arange(N), N)).tolist()
    checked = 0
    for d, s in zip(dups, planted_source(np.array(dups)).tolist(), strict=True):
        if jaccard(texts[d], texts[s]) >= 0.9:
            checked += 1
            assert got.get(d, d) == got.get(s, s), (d, s)
    assert checked == len(dups) == N // 50
    del texts
    # Time per text against the in-memory path at 300K (CPU seconds: the machine is shared).
    memory = run_side("memory", 300_000)
    per_staged = staged["cpu_seconds"] / N
    per_memory = memory["cpu_seconds"] / 300_000
    print(f"staged 1M: {staged}; memory 300K: {memory}; CPU per text ratio {per_staged / per_memory:.3f}")
    assert per_staged <= 1.5 * per_memory, (staged, memory)


@pytest.mark.timeout(1800)
def test_a_collapse_cluster_of_20k_among_1m_is_one_cluster_in_bounded_memory(tmp_path: Path) -> None:
    staged = run_side("staged", N, root=str(tmp_path), memory_mb=512, collapse=20_000)
    assert staged["peak_rss_mb"] <= RSS_BOUND_MB, staged
    got = answer(tmp_path)
    members = np.flatnonzero(in_collapse(np.arange(N), N, 20_000)).tolist()
    assert len(members) == 20_000
    texts = synth_texts(members[0], members[0] + 1, N, 20_000) + synth_texts(members[-1], members[-1] + 1, N, 20_000)
    assert jaccard(texts[0], texts[1]) > 0.95  # near-identical, checked here
    first = members[0]
    assert first not in got
    assert all(got.get(s) == first for s in members[1:])
    # Nothing outside the collapse and the planted pairs is swept into that cluster.
    assert sum(1 for k in got.values() if k == first) == len(members) - 1
