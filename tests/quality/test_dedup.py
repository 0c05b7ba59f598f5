"""Dedup: order independence, the documented MinHash threshold, regeneration rounds."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from datamill.quality.dedup import make_method, rejected_slots
from datamill.quality.dedup.structural import shape

BASE = (
    "the river system carries fresh water from the northern hills through three old towns and "
    "into a wide delta where farmers grow rice beans and melons during the long dry summer months "
    "while fishing boats wait at the harbour for the tide to turn and the evening markets open with "
    "bread cheese olives and honey sold by families who have traded there for many generations"
)


def jaccard(a: str, b: str) -> float:
    """Exact Jaccard of word 3-shingles, computed here independently of rensa."""

    def sh(t: str) -> set[tuple[str, ...]]:
        w = t.lower().split()
        return {tuple(w[i : i + 3]) for i in range(len(w) - 2)}

    x, y = sh(a), sh(b)
    return len(x & y) / len(x | y)


def variant(words_to_change: int, seed: int) -> str:
    rng = random.Random(seed)
    w = BASE.split()
    for i in rng.sample(range(len(w)), words_to_change):
        w[i] = f"zz{seed}x{i}"
    return " ".join(w)


def test_minhash_catches_planted_near_duplicates_at_the_threshold() -> None:
    far = [
        f"completely different sentence number {i} about " + " ".join(f"w{i}_{k}" for k in range(25)) for i in range(30)
    ]
    near = [variant(1, s) for s in range(10)]  # one word changed of 64: Jaccard ~0.91
    texts = [*far, BASE, *near]
    records = [(i, t) for i, t in enumerate(texts)]
    for t in near:
        assert jaccard(BASE, t) >= 0.88
    rejected = set(rejected_slots(records, make_method("minhash", 0.8)))
    # Every planted near-duplicate goes; the lowest slot of the cluster (BASE, slot 30) stays.
    assert rejected >= set(range(31, 41))
    assert 30 not in rejected
    assert not rejected & set(range(30))
    # Pairs well below the threshold are not merged.
    distant = variant(20, 99)
    assert jaccard(BASE, distant) < 0.4
    assert rejected_slots([(0, BASE), (1, distant)], make_method("minhash", 0.8)) == {}


@pytest.mark.parametrize("method", ["exact", "structural", "minhash", "semantic"])
def test_kept_set_does_not_depend_on_arrival_order(method: str) -> None:
    rng = random.Random(7)
    texts = [f"Alice bought {rng.randint(1, 5)} apples for the 'picnic' at noon." for _ in range(40)]
    texts += [variant(1, s) for s in range(20)] + [f"unique text {i} " + "x " * i for i in range(20)]
    records = [(slot, t) for slot, t in enumerate(texts)]
    m = make_method(method)
    want = rejected_slots(records, m)
    assert want  # the set has duplicates to find
    for seed in range(5):
        shuffled = records[:]
        random.Random(seed).shuffle(shuffled)
        assert rejected_slots(shuffled, m) == want


def test_semantic_catches_near_identical_meaning_not_other_topics() -> None:
    import numpy as np

    texts = [
        "The cat sat on the mat near the door.",  # 0
        "Quarterly revenue grew by twelve percent in Europe.",  # 1
        "The cat sat on the mat near the door!",  # 2: the same sentence, other punctuation
        "Stock markets fell sharply on Monday morning.",  # 3
        "the CAT sat on the mat, near the door",  # 4
    ]
    m = make_method("semantic", 0.9)
    vecs = m.embed(texts)  # type: ignore[attr-defined]
    sims = vecs @ vecs.T
    # Independent check of the documented rule: cosine >= 0.9 between unit vectors.
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert sims[0, 2] >= 0.9 and sims[0, 4] >= 0.9 and sims[0, 1] < 0.6 and sims[1, 3] < 0.6
    assert rejected_slots(list(enumerate(texts)), m) == {2: 0, 4: 0}  # each with the slot it duplicates


def test_exact_and_structural_normalisation() -> None:
    assert rejected_slots([(0, "Hello,  World!"), (1, "hello world")], make_method("exact")) == {1: 0}
    assert shape('Ask Maria for 3 "red" pens') == shape('Ask Peter for 12 "blue" pens')
    assert rejected_slots(
        [(5, 'Ask Maria for 3 "red" pens'), (2, 'Ask Peter for 12 "blue" pens')], make_method("structural")
    ) == {5: 2}


GEN = """
def pick(ctx):
    # Attempt 0 draws from 3 phrases (many duplicates); later attempts from a large space.
    k = 3 if ctx.attempt == 0 else 10**9
    yield {"text": f"phrase {ctx.rng.randrange(k)} for the dataset"}
"""


def test_dedup_rounds_regenerate_rejected_slots_until_clean(run_cli, tmp_path: Path) -> None:
    (tmp_path / "gen.py").write_text(GEN)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: d\nsize: 40\ncolumns:\n  g: {generator: './gen.py:pick'}\noutput: {part_size: 10}\n")
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert run_cli("run", str(recipe), "--out", str(out)).returncode == 0
        res = run_cli("dedup", str(out), "--method", "exact")
        assert res.returncode == 0, res.stdout + res.stderr
        runs.append(run_cli("cat", str(out)).stdout)
    assert runs[0] == runs[1]  # regeneration uses attempt seeds: deterministic
    recs = [orjson.loads(x) for x in runs[0].splitlines()]
    assert len(recs) == 40 and len({r["text"] for r in recs}) == 40
    report = orjson.loads((tmp_path / "a" / "reports" / "dedup.json").read_bytes())
    assert report["rounds"][0]["round"] == 1 and report["rounds"][0]["count"] == 37  # 3 kept of 40
    assert report["left_rejected"] == []
    # Kept slots are the lowest of each original cluster: their attempt-0 text is unchanged.
    kept = sorted(set(range(40)) - set(map(int, report["regenerated_slots"])))
    assert len(kept) == 3 and kept[0] == 0
    assert run_cli("verify", str(tmp_path / "a"), "--no-tokens").returncode == 0


def test_dedup_leaves_out_what_stays_duplicated(run_cli, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: d\nsize: 12\ncolumns:\n  a: {sampler: integer, low: 1, high: 2}\n  t: {template: 'n {{ a }}'}\n"
    )
    out = tmp_path / "run"
    assert run_cli("run", str(recipe), "--out", str(out)).returncode == 0
    res = run_cli("dedup", str(out), "--rounds", "2")
    assert res.returncode == 1 and "left rejected: 10" in res.stdout
    recs = [orjson.loads(x) for x in run_cli("cat", str(out)).stdout.splitlines()]
    assert sorted(r["t"] for r in recs) == ["n 1", "n 2"]


def test_window_mode_only_looks_back_the_window() -> None:
    from datamill.quality.dedup import rejected_in_window

    texts = ["alpha beta gamma"] + [f"filler text number {i}" for i in range(1, 10)] + ["alpha beta gamma"]
    records = list(enumerate(texts))  # the repeat is 10 records after the original
    exact = make_method("exact")
    assert set(rejected_in_window(records, exact, window=20)) == {10}
    assert rejected_in_window(records, exact, window=5) == {}  # out of sight: kept
    assert set(rejected_slots(records, exact)) == {10}  # the global pass always sees it


def test_a_dedup_killed_while_rewriting_parts_finishes_the_same_outcome(
    run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import datamill.quality.dedup as dd

    (tmp_path / "gen.py").write_text(GEN)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: d\nsize: 40\ncolumns:\n  g: {generator: './gen.py:pick'}\noutput: {part_size: 10}\n")
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli("run", str(recipe), "--out", str(a)).returncode == 0
    shutil.copytree(a, b)
    whole = dd.dedup_run(a, "exact")
    # b dies after rewriting one part of four: the outcome was saved first.
    real, calls = dd.part_writer, []

    def dying(*args: object, **kw: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(dd, "part_writer", dying)
    with pytest.raises(KeyboardInterrupt):
        dd.dedup_run(b, "exact")
    assert (b / "reports" / dd.PENDING).is_file()
    assert run_cli("cat", str(b)).stdout != run_cli("cat", str(a)).stdout  # half applied
    monkeypatch.setattr(dd, "part_writer", real)
    again = dd.dedup_run(b, "exact")
    assert not (b / "reports" / dd.PENDING).exists()
    assert run_cli("cat", str(b)).stdout == run_cli("cat", str(a)).stdout
    assert again.as_dict() == whole.as_dict()
    assert run_cli("verify", str(b), "--no-tokens").returncode == 0


def test_a_quota_left_with_duplicates_fails_those_slots(run_cli, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: d\nsize: 12\ncolumns:\n  a: {sampler: integer, low: 1, high: 2}\n  t: {template: 'n {{ a }}'}\n"
        "dedup: {method: exact, rounds: 2, on_exhausted: fail, by: a}\n"
    )
    out = tmp_path / "run"
    res = run_cli("run", str(recipe), "--out", str(out))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "10 failed" in res.stdout and "still a duplicate (exact) of slot" in res.stdout
    st = run_cli("status", str(out), "--json")
    doc = orjson.loads(st.stdout)
    assert doc["slots_failed"] == 10 and doc["records"] == 2
    report = orjson.loads((out / "reports" / "dedup.json").read_bytes())
    assert report["rounds"][-1]["round"] == "left" and sum(report["rounds"][-1]["by"].values()) == 10
    assert len(report["failed"]) == 10
    # A second run changes nothing and says the same.
    again = run_cli("run", str(recipe), "--out", str(out))
    assert again.returncode == 1 and run_cli("cat", str(out)).stdout.count("\n") == 2


# -- staged dedup (issue 19) ---------------------------------------------------------------------

ALPHA = [a + b + c for a in "bcdfgklmnprst" for b in "aeiou" for c in "nrstlm"]  # 390 words, no digits


def staged_corpus(n: int, seed: int = 3) -> list[tuple[int, str]]:
    """``n`` records of 14 words: 2% near-duplicates (last word changed), 1% exact duplicates
    (case and punctuation changed), 1% structural twins (other numbers and names), a collapse
    cluster of 1% of near-identical texts, and some slots with two records."""
    rng = random.Random(seed)
    texts: list[str] = []
    sentence = " ".join(rng.choice(ALPHA) for _ in range(40))
    for i in range(n):
        kind = i % 100
        if i > 200 and kind in (7, 8):
            w = texts[rng.randrange(i - 200, i)].split()
            w[-1] = f"changed{i}"
            texts.append(" ".join(w))
        elif i > 200 and kind == 9:
            texts.append(texts[rng.randrange(i - 200, i)].upper() + "!")
        elif kind == 10:
            texts.append(f"Ask {rng.choice(['Maria', 'Peter', 'Olga'])} for {rng.randrange(99)} pens, case {i % 7}")
        elif kind == 11:
            texts.append(f"{sentence} {rng.choice(ALPHA)}")
        else:
            texts.append(" ".join(rng.choice(ALPHA) for _ in range(14)))
    # Record i is slot i, except every 100th + 1, which is a second record of the slot before it.
    return [(i - 1 if i % 100 == 1 else i, t) for i, t in enumerate(texts)]


def corpus_shards(records: list[tuple[int, str]], size: int) -> list[object]:
    from datamill.quality.dedup.staged import Shard

    assert size % 100 == 0  # a slot's two records stay in one shard

    def rows(lo: int) -> object:
        return lambda: records[lo : lo + size]

    return [Shard(f"test-{len(records)}-{lo}-{size}", rows(lo)) for lo in range(0, len(records), size)]  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def corpus_100k() -> list[tuple[int, str]]:
    return staged_corpus(100_000)


@pytest.mark.parametrize("method", ["exact", "structural", "minhash", "structural,minhash"])
def test_staged_and_in_memory_paths_reject_identical_slots_on_100k(
    method: str, corpus_100k: list[tuple[int, str]], tmp_path: Path
) -> None:
    from datamill.quality.dedup import staged_methods
    from datamill.quality.dedup.staged import StagedDedup

    m = make_method(method)
    want = rejected_slots(corpus_100k, m)
    assert len(want) > 500  # the corpus has duplicates of this kind to find
    methods = staged_methods(m)
    assert methods is not None
    # A small budget: many key ranges per band, many verification batches.
    got = StagedDedup(methods, tmp_path, memory_mb=16).run(corpus_shards(corpus_100k, 7000))  # type: ignore[arg-type]
    assert got == want


def test_bucket_window_finds_the_same_clusters_as_all_pairs_and_stays_linear_on_a_collapse() -> None:
    from datamill.quality.dedup.base import WINDOW, clusters
    from datamill.quality.dedup.minhash import signature

    records = staged_corpus(20_000, seed=5)
    texts = [t for _, t in records]
    m = make_method("minhash")
    window_pairs = list(m.pairs(texts))
    all_pairs = m.pairs_of([signature(t) for t in texts])  # type: ignore[attr-defined]  # rensa's LSH, all pairs
    assert len(all_pairs) > 3 * len(window_pairs)  # the collapse cluster: k**2 pairs against O(k) links
    assert clusters(len(texts), window_pairs) == clusters(len(texts), all_pairs)
    # 5,000 near-identical texts: one cluster, at most WINDOW links per member per band.
    collapse = [f"{' '.join(ALPHA[:40])} {w}" for w in ALPHA] * 13
    collapse = [f"{t} x{i}" for i, t in enumerate(collapse[:5000])]
    links = list(m.pairs(collapse))
    assert len(links) <= WINDOW * 16 * len(collapse)
    assert clusters(len(collapse), links) == [list(range(len(collapse)))]


def shingle_jaccard(a: str, b: str) -> float:
    """Exact Jaccard of lower-cased word 3-shingles (``\\w+`` words), independent of datamill."""
    import re

    def sh(t: str) -> set[tuple[str, ...]]:
        w = re.findall(r"\w+", t.lower())
        return {tuple(w[i : i + 3]) for i in range(len(w) - 2)}

    x, y = sh(a), sh(b)
    return len(x & y) / len(x | y)


def test_staged_minhash_finds_every_planted_pair_at_jaccard_090(tmp_path: Path) -> None:
    from datamill.bench.dedup_bench import is_planted, planted_source, synth_shards, synth_texts
    from datamill.quality.dedup.staged import StagedDedup

    n = 60_000
    got = StagedDedup([make_method("minhash")], tmp_path, memory_mb=32).run(synth_shards(n, 8000))  # type: ignore[list-item]
    texts = synth_texts(0, n, n)
    import numpy as np

    dups = np.flatnonzero(is_planted(np.arange(n), n)).tolist()
    srcs = planted_source(np.array(dups)).tolist()
    checked = 0
    for d, s in zip(dups, srcs, strict=True):
        if shingle_jaccard(texts[d], texts[s]) >= 0.9:
            checked += 1
            assert got.get(d, d) == got.get(s, s), (d, s)
    assert checked == len(dups) == n // 50


NEAR_GEN = """
BASES = [" ".join(f"b{k}x{i}" for i in range(30)) for k in range(20)]


def pick(ctx):
    # Attempt 0: one slot in 10 is a near-duplicate (a shared 30-word base, its own last word).
    if ctx.attempt == 0 and ctx.rng.random() < 0.1:
        yield {"text": BASES[ctx.rng.randrange(20)] + f" end{ctx.rng.randrange(10**6)}"}
    else:
        yield {"text": " ".join(f"u{ctx.rng.randrange(10**9)}" for _ in range(30))}
"""


@pytest.fixture(scope="module")
def near_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import subprocess
    import sys

    from helpers import cli_env

    d = tmp_path_factory.mktemp("near")
    (d / "gen.py").write_text(NEAR_GEN)
    recipe = d / "r.yaml"
    recipe.write_text("name: near\nsize: 3000\ncolumns:\n  g: {generator: './gen.py:pick'}\noutput: {part_size: 500}\n")
    out = d / "run"
    res = subprocess.run([sys.executable, "-m", "datamill", "run", str(recipe), "--out", str(out)],
                         capture_output=True, text=True, env=cli_env(), timeout=240)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    return out


def test_staged_dedup_run_matches_the_in_memory_run(
    run_cli, near_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import datamill.quality.dedup as dd

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(near_run, a)
    shutil.copytree(near_run, b)
    staged = dd.dedup_run(a, "minhash")
    assert staged.rounds and staged.rounds[0]["count"] > 100
    assert (a / "dedup" / "shards").is_dir() and not (a / "dedup" / "work").exists()  # links pruned
    monkeypatch.setattr(dd, "staged_methods", lambda m: None)  # the in-memory path
    memory = dd.dedup_run(b, "minhash")
    assert staged.as_dict() == memory.as_dict()
    assert run_cli("cat", str(a)).stdout == run_cli("cat", str(b)).stdout


@pytest.mark.parametrize("stage", ["sign:7", "link:5", "cluster:1"])
def test_datamill_dedup_killed_in_each_stage_resumes_to_the_same_outcome(
    run_cli, near_run: Path, tmp_path: Path, stage: str
) -> None:
    import os
    import shutil
    import signal
    import subprocess
    import sys

    from helpers import cli_env

    ref, hit = tmp_path / "ref", tmp_path / "hit"
    shutil.copytree(near_run, ref)
    shutil.copytree(near_run, hit)
    # The reference runs under another budget (other key ranges and batches): the same outcome.
    assert run_cli("dedup", str(ref), "--method", "minhash", "--memory-mb", "16").returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "datamill", "dedup", str(hit), "--method", "minhash"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**cli_env(), "DATAMILL_DEDUP_PAUSE": stage}, start_new_session=True)  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # printed with a temporary file written, not yet published
        assert line.startswith("dedup paused in " + stage.split(":")[0]), line
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert [p for p in (hit / "dedup").rglob("*") if ".tmp-" in p.name]  # the kill left a torn write behind
    assert not (hit / "reports" / "dedup.json").exists()
    res = run_cli("dedup", str(hit), "--method", "minhash")
    assert res.returncode == 0, res.stdout + res.stderr
    assert not [p for p in (hit / "dedup").rglob("*") if ".tmp-" in p.name]
    assert (hit / "reports" / "dedup.json").read_bytes() == (ref / "reports" / "dedup.json").read_bytes()
    assert run_cli("cat", str(hit)).stdout == run_cli("cat", str(ref)).stdout
