"""``datamill bench dedup``: MinHash near-dup detection against a bare rensa LSH pass.

Both sides get the same N texts of ~100 words (with planted near-duplicates) and the same word
3-shingles: ``bare`` builds one RMinHash per text, inserts all into an RMinHashLSH and queries
each; ``datamill`` runs :func:`datamill.quality.dedup.rejected_slots` with the MinHash method
(the same, plus the Jaccard check of each candidate pair, clustering and keep-lowest-slot).
"""

from __future__ import annotations

import random
import time
from typing import Any

from datamill.forked import in_fork


def make_texts(n: int, words: int = 100, dup_share: float = 0.05, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(5000)]
    texts = [" ".join(rng.choice(vocab) for _ in range(words)) for _ in range(n)]
    for i in rng.sample(range(n), int(n * dup_share)):
        src = texts[rng.randrange(n)].split()
        src[rng.randrange(words)] = "changed"
        texts[i] = " ".join(src)
    return texts


def _bare(texts: list[str]) -> dict[str, Any]:
    import resource

    from rensa import RMinHash, RMinHashLSH

    from datamill.quality.dedup.minhash import BANDS, NUM_PERM, SEED, shingles

    t0 = time.perf_counter()
    hashes = []
    for t in texts:
        m = RMinHash(num_perm=NUM_PERM, seed=SEED)
        m.update(shingles(t))
        hashes.append(m)
    lsh = RMinHashLSH(threshold=0.8, num_perm=NUM_PERM, num_bands=BANDS)
    for i, m in enumerate(hashes):
        lsh.insert(i, m)
    candidates = sum(len(lsh.query(m)) for m in hashes)
    return {"seconds": time.perf_counter() - t0, "candidates": candidates,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip


def _ours(texts: list[str]) -> dict[str, Any]:
    import resource

    from datamill.quality.dedup import make_method, rejected_slots

    t0 = time.perf_counter()
    rejected = rejected_slots(list(enumerate(texts)), make_method("minhash", 0.8))
    return {"seconds": time.perf_counter() - t0, "rejected": len(rejected),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip


def run_dedup_bench(n: int, repeat: int = 1) -> dict[str, Any]:
    import rensa  # noqa: F401

    import datamill.quality.dedup  # noqa: F401

    texts = make_texts(n)
    bare = min((in_fork(_bare, texts) for _ in range(repeat)), key=lambda r: r["seconds"])
    ours = min((in_fork(_ours, texts) for _ in range(repeat)), key=lambda r: r["seconds"])
    return {"n": n, "bare": bare, "datamill": ours, "ratio": round(ours["seconds"] / bare["seconds"], 3)}
