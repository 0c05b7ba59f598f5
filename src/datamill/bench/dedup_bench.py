"""``datamill bench dedup``: MinHash near-dup detection, staged and in memory, against bare rensa.

Every side gets the same N texts and the same word 3-shingles. ``bare`` builds one RMinHash per
text, inserts all into an RMinHashLSH and queries each (candidates only); ``datasketch`` does the
same with datasketch's MinHash and MinHashLSH when it is installed (``pip install datasketch``);
``memory`` runs :func:`datamill.quality.dedup.rejected_slots` with the MinHash method (signatures,
bucket links, the Jaccard check, clustering and keep-lowest-slot, all in memory); ``staged`` runs
:class:`datamill.quality.dedup.staged.StagedDedup` over shards of the same texts (signatures and
links on disk, memory bounded by ``--memory-mb``). Each side runs in a fresh process, so its peak
RSS is its own.

The texts (:func:`synth_texts`) are 25 random words each from a 5,000-word vocabulary, computed
from the slot alone (no state, any size on the fly); 2% are planted near-duplicates: slot ``s``
with ``s % 50 == 49`` copies an earlier unplanted slot's text with its last word changed (exact
Jaccard of word 3-shingles 22/24 = 0.917). ``collapse=K`` makes K slots one 60-word sentence with
only its last word varied (pairwise Jaccard 0.97): what model collapse looks like.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WORDS = 25
VOCAB = 5000
PLANT_EVERY = 50
COLLAPSE_WORDS = 60


def _mix(x: Any) -> Any:
    import numpy as np

    x = np.asarray(x, dtype=np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def planted_source(slots: Any) -> Any:
    """The slot each planted slot copies (an unplanted one, up to 100K slots back)."""
    import numpy as np

    slots = np.asarray(slots, dtype=np.int64)
    back = (_mix(slots.astype(np.uint64) + np.uint64(7)) % np.uint64(2000)).astype(np.int64)
    src = slots - 1 - PLANT_EVERY * back
    return np.where(src >= 0, src, slots - 1)


def is_planted(slots: Any, n: int, collapse: int = 0) -> Any:
    import numpy as np

    slots = np.asarray(slots, dtype=np.int64)
    return (slots % PLANT_EVERY == PLANT_EVERY - 1) & ~in_collapse(slots, n, collapse)


def in_collapse(slots: Any, n: int, collapse: int) -> Any:
    """The collapse cluster: every ``n // collapse``-th slot from slot 3 (none when ``collapse`` is 0)."""
    import numpy as np

    slots = np.asarray(slots, dtype=np.int64)
    if not collapse:
        return np.zeros(len(slots), dtype=bool)
    step = max(1, n // collapse)
    return (slots % step == 3) & (slots // step < collapse)


def synth_texts(lo: int, hi: int, n: int, collapse: int = 0) -> list[str]:
    """The texts of slots ``[lo, hi)`` of an ``n``-text benchmark set."""
    import numpy as np

    slots = np.arange(lo, hi, dtype=np.int64)
    planted = is_planted(slots, n, collapse)
    base = np.where(planted, planted_source(slots), slots).astype(np.uint64)
    grid = base[:, None] * np.uint64(64) + np.arange(WORDS, dtype=np.uint64)[None, :]
    words = (_mix(grid) % np.uint64(VOCAB)).astype(np.int64)
    out = []
    for s, row, p in zip(slots.tolist(), words.tolist(), planted.tolist(), strict=True):
        w = [f"w{x}" for x in row]
        if p:
            w[-1] = f"changed{s}"
        out.append(" ".join(w))
    if collapse:
        sentence = " ".join(f"c{i}" for i in range(COLLAPSE_WORDS - 1))
        for i in np.flatnonzero(in_collapse(slots, n, collapse)).tolist():
            out[i] = f"{sentence} v{lo + i}"
    return out


def synth_shards(n: int, shard_size: int = 50_000, collapse: int = 0) -> list[Any]:
    from datamill.quality.dedup.staged import Shard

    def rows(lo: int) -> Callable[[], list[tuple[int, str]]]:
        hi = min(n, lo + shard_size)

        def make() -> list[tuple[int, str]]:
            return list(enumerate(synth_texts(lo, hi, n, collapse), start=lo))

        return make

    return [Shard(f"synth-v1-{n}-{collapse}-{lo}-{shard_size}", rows(lo)) for lo in range(0, n, shard_size)]


def make_texts(n: int, words: int = 100, dup_share: float = 0.05, seed: int = 0) -> list[str]:
    """Older small set: ``n`` random texts of ``words`` words, ``dup_share`` of them one word changed."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(5000)]
    texts = [" ".join(rng.choice(vocab) for _ in range(words)) for _ in range(n)]
    for i in rng.sample(range(n), int(n * dup_share)):
        src = texts[rng.randrange(n)].split()
        src[rng.randrange(words)] = "changed"
        texts[i] = " ".join(src)
    return texts


def _peak_mb() -> float:
    """This process's peak RSS: VmHWM, which (unlike ``ru_maxrss``) starts afresh at exec and so
    does not inherit the size of the process that spawned it."""
    import resource

    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu() -> float:
    """CPU seconds of this process (user + system): steadier than wall time on a shared machine."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def side_staged(n: int, root: str, memory_mb: int, collapse: int = 0) -> dict[str, Any]:
    from datamill.quality.dedup import make_method
    from datamill.quality.dedup.staged import StagedDedup

    t0, c0 = time.perf_counter(), _cpu()
    rejected = StagedDedup([make_method("minhash", 0.8)], root, memory_mb).run(synth_shards(n, collapse=collapse))  # type: ignore[list-item]
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    import numpy as np

    np.save(Path(root) / "answer.npy", np.array(sorted(rejected.items()), dtype=np.int64).reshape(-1, 2))
    return {"seconds": seconds, "cpu_seconds": cpu, "rejected": len(rejected), "peak_rss_mb": _peak_mb()}


def side_memory(n: int, collapse: int = 0) -> dict[str, Any]:
    from datamill.quality.dedup import make_method, rejected_slots

    texts = synth_texts(0, n, n, collapse)
    t0, c0 = time.perf_counter(), _cpu()
    rejected = rejected_slots(list(enumerate(texts)), make_method("minhash", 0.8))
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": _cpu() - c0, "rejected": len(rejected),
            "peak_rss_mb": _peak_mb()}  # fmt: skip


def side_bare(n: int, collapse: int = 0) -> dict[str, Any]:
    from rensa import RMinHash, RMinHashLSH

    from datamill.quality.dedup.minhash import BANDS, NUM_PERM, SEED, shingles

    texts = synth_texts(0, n, n, collapse)
    t0, c0 = time.perf_counter(), _cpu()
    hashes = []
    for t in texts:
        m = RMinHash(num_perm=NUM_PERM, seed=SEED)
        m.update(shingles(t))
        hashes.append(m)
    lsh = RMinHashLSH(threshold=0.8, num_perm=NUM_PERM, num_bands=BANDS)
    for i, m in enumerate(hashes):
        lsh.insert(i, m)
    candidates = sum(len(lsh.query(m)) for m in hashes)
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": _cpu() - c0, "candidates": candidates,
            "peak_rss_mb": _peak_mb()}  # fmt: skip


def side_datasketch(n: int, collapse: int = 0) -> dict[str, Any]:
    from datasketch import MinHash, MinHashLSH

    from datamill.quality.dedup.minhash import BANDS, NUM_PERM, shingles

    texts = synth_texts(0, n, n, collapse)
    t0, c0 = time.perf_counter(), _cpu()
    lsh = MinHashLSH(num_perm=NUM_PERM, params=(BANDS, NUM_PERM // BANDS))
    hashes = []
    for i, t in enumerate(texts):
        m = MinHash(num_perm=NUM_PERM)
        m.update_batch([s.encode() for s in shingles(t)])
        lsh.insert(i, m)
        hashes.append(m)
    candidates = sum(len(lsh.query(m)) for m in hashes)
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": _cpu() - c0, "candidates": candidates,
            "peak_rss_mb": _peak_mb()}  # fmt: skip


SEMANTIC_PLANT_EVERY = 20


def semantic_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` sentences of 12-24 real words (the MiniLM WordPiece vocabulary's whole words); every
    20th copies an earlier text with one or two small edits (a word replaced, two swapped, one
    dropped, a capital letter; other end punctuation): paraphrase-like near-duplicates, most of
    them at cosine 0.9-0.99, some below the 0.9 threshold."""
    from datamill.tokenize import default_tokenizer_path

    with open(default_tokenizer_path().parent / "vocab.txt", encoding="utf-8") as f:
        vocab = [w.strip() for w in f]
    words = [w for w in vocab[2000:] if w.isalpha() and len(w) >= 3]
    rng = random.Random(seed)
    texts: list[str] = []
    for i in range(n):
        if i % SEMANTIC_PLANT_EVERY == SEMANTIC_PLANT_EVERY - 1:
            w = texts[rng.randrange(i)].rstrip(".!").split()
            for _ in range(rng.randint(1, 2)):
                kind = rng.randrange(4)
                if kind == 0:
                    w[rng.randrange(len(w))] = rng.choice(words)
                elif kind == 1:
                    j = rng.randrange(len(w) - 1)
                    w[j], w[j + 1] = w[j + 1], w[j]
                elif kind == 2 and len(w) > 3:
                    del w[rng.randrange(len(w))]
                else:
                    w[0] = w[0].capitalize()
            texts.append(" ".join(w) + rng.choice([".", "!", "", " ."]))
        else:
            texts.append(" ".join(rng.choice(words) for _ in range(rng.randint(12, 24))) + ".")
    return texts


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def side_semantic(n: int, root: str, exact: bool) -> dict[str, Any]:
    """Semantic pairs of :func:`semantic_texts` (clustered, or ``exact`` all-pairs in memory),
    saved to ``root``; time, and peak RSS over the texts and model alone (``before_mb``)."""
    import numpy as np

    from datamill.quality.dedup.semantic import Semantic, all_pairs

    texts = semantic_texts(n)
    m = Semantic(0.9, exact_max=0)
    m.embed(texts[:10])
    before = _rss_mb()
    t0, c0 = time.perf_counter(), _cpu()
    found = all_pairs(m.embed(texts), m.threshold) if exact else m.pairs(texts)
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    np.save(Path(root) / ("exact.npy" if exact else "clustered.npy"), np.array(found, dtype=np.int64).reshape(-1, 2))
    return {"seconds": seconds, "cpu_seconds": cpu, "pairs": len(found), "before_mb": before,
            "peak_rss_mb": _peak_mb()}  # fmt: skip


def run_semantic_bench(n: int, *, exact: bool = True, timeout_s: float | None = None) -> dict[str, Any]:
    """Clustered semantic dedup of ``n`` texts in a fresh process (time, peak RSS) and, with
    ``exact``, exact all-pairs in another: the clustered path's recall of the exact pairs."""
    import numpy as np

    out: dict[str, Any] = {"n": n}
    with tempfile.TemporaryDirectory(prefix="datamill-semantic-bench-") as root:
        for side in ("clustered", "exact") if exact else ("clustered",):
            args = [sys.executable, "-m", "datamill.bench.dedup_bench", "semantic", str(n), root, side]
            proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"dedup bench side semantic {side} failed: {proc.stderr[-2000:]}")
            out[side] = json.loads(proc.stdout.splitlines()[-1])
        if exact:
            got = {tuple(p) for p in np.load(Path(root) / "clustered.npy").tolist()}
            want = {tuple(p) for p in np.load(Path(root) / "exact.npy").tolist()}
            out["recall"] = len(got & want) / max(1, len(want))
            out["extra"] = len(got - want)
    out["embeddings_mb"] = n * 384 * 4 / 2**20
    return out


SIDES: dict[str, Callable[[int, int], dict[str, Any]]] = {
    "memory": side_memory,
    "bare": side_bare,
    "datasketch": side_datasketch,
}


def run_side(side: str, n: int, *, collapse: int = 0, root: str | None = None, memory_mb: int = 512,
             timeout_s: float | None = None) -> dict[str, Any]:  # fmt: skip
    """One side in a fresh interpreter; its result with the child's own peak RSS."""
    args = [sys.executable, "-m", "datamill.bench.dedup_bench", side, str(n), str(collapse)]
    if side == "staged":
        args += [str(root), str(memory_mb)]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"dedup bench side {side} failed: {proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout.splitlines()[-1]))


def datasketch_available() -> bool:
    try:
        import datasketch  # noqa: F401
    except ImportError:
        return False
    return True


def run_dedup_bench(n: int, repeat: int = 1, *, memory_mb: int = 512, memory_path: bool = True,
                    others: bool = True, collapse: int = 0) -> dict[str, Any]:  # fmt: skip
    """Each side on the same ``n`` texts; the fastest of ``repeat`` runs of each."""

    def best(side: str, **kw: Any) -> dict[str, Any]:
        return min((run_side(side, n, collapse=collapse, **kw) for _ in range(repeat)), key=lambda r: r["seconds"])

    out: dict[str, Any] = {"n": n, "memory_mb": memory_mb, "collapse": collapse}
    with tempfile.TemporaryDirectory(prefix="datamill-dedup-bench-") as root:
        runs = []
        for _ in range(repeat):
            for f in Path(root).iterdir():
                (__import__("shutil").rmtree(f) if f.is_dir() else f.unlink())
            runs.append(run_side("staged", n, collapse=collapse, root=root, memory_mb=memory_mb))
        out["staged"] = min(runs, key=lambda r: r["seconds"])
    if memory_path:
        out["memory"] = best("memory")
        out["same_rejected"] = out["memory"]["rejected"] == out["staged"]["rejected"]
    if others:
        out["bare"] = best("bare")
        if datasketch_available():
            out["datasketch"] = best("datasketch")
    for side in ("memory", "bare", "datasketch"):
        if side in out:
            out[f"staged/{side}"] = round(out["staged"]["seconds"] / out[side]["seconds"], 3)
            out[f"staged/{side} cpu"] = round(out["staged"]["cpu_seconds"] / out[side]["cpu_seconds"], 3)
    return out


def main(argv: list[str]) -> None:
    if argv[0] == "semantic":
        print(json.dumps(side_semantic(int(argv[1]), argv[2], argv[3] == "exact")))
        return
    side, n, collapse = argv[0], int(argv[1]), int(argv[2])
    res = side_staged(n, argv[3], int(argv[4]), collapse) if side == "staged" else SIDES[side](n, collapse)
    print(json.dumps(res))


if __name__ == "__main__":
    main(sys.argv[1:])
