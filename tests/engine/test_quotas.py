"""Quotas: counts per stratum exactly as allocated (largest remainder), for uneven sizes."""

from __future__ import annotations

from collections import Counter
from fractions import Fraction
from pathlib import Path

import orjson
import pytest

from datamill.engine import largest_remainder

RECIPE = """
name: q
seed: 5
size: {size}
columns:
  level: {{sampler: categorical, values: [easy, medium, hard]}}
  lang: {{sampler: categorical, values: [en, fr]}}
  n: {{sampler: integer, low: 1, high: 6}}
quotas:
  level: {{easy: 0.5, medium: 0.3, hard: 0.2}}
  lang: {{en: 2, fr: 1}}
output: {{part_size: 7}}
"""


def expected_counts(size: int) -> dict[tuple[str, str], int]:
    """Largest remainder worked out here by hand-written arithmetic, not datamill's."""
    cells = [(lv, lg) for lv in ("easy", "medium", "hard") for lg in ("en", "fr")]
    w_level = {"easy": Fraction(5, 10), "medium": Fraction(3, 10), "hard": Fraction(2, 10)}
    w_lang = {"en": Fraction(2, 3), "fr": Fraction(1, 3)}
    exact = {c: size * w_level[c[0]] * w_lang[c[1]] for c in cells}
    floors = {c: exact[c].numerator // exact[c].denominator for c in cells}
    left = size - sum(floors.values())
    by_remainder = sorted(cells, key=lambda c: (-(exact[c] - floors[c]), cells.index(c)))
    for c in by_remainder[:left]:
        floors[c] += 1
    return floors


def test_largest_remainder_small_cases() -> None:
    assert largest_remainder(100, [Fraction(1)] * 3) == [34, 33, 33]
    assert largest_remainder(7, [Fraction(5), Fraction(3), Fraction(2)]) == [4, 2, 1]
    assert largest_remainder(0, [Fraction(1), Fraction(1)]) == [0, 0]
    assert largest_remainder(5, [Fraction(1), Fraction(0)]) == [5, 0]


@pytest.mark.parametrize("size", [1, 7, 23, 101, 997])
def test_counts_per_stratum_are_exact(size: int, run_cli, tmp_path: Path) -> None:
    recipe = tmp_path / "q.yaml"
    recipe.write_text(RECIPE.format(size=size))
    dirs = []
    for shard in range(3):
        out = tmp_path / f"s{shard}"
        res = run_cli("run", str(recipe), "--out", str(out), "--num-shards", "3", "--shard-index", str(shard))
        assert res.returncode == 0, res.stderr
        dirs.append(out)
    merged = tmp_path / "all.jsonl"
    assert run_cli("merge", *map(str, dirs), "--out", str(merged)).returncode == 0
    records = [orjson.loads(x) for x in merged.read_bytes().splitlines()]
    assert len(records) == size
    got = Counter((r["level"], r["lang"]) for r in records)
    want = {k: v for k, v in expected_counts(size).items() if v}
    assert dict(got) == want
    assert all(1 <= r["n"] <= 6 for r in records)
    plan = run_cli("plan", str(recipe)).stdout
    for (lv, lg), n in want.items():
        assert f"level={lv}, lang={lg}" in plan and f"{n:,}" in plan


def test_strata_are_spread_over_shards(run_cli, tmp_path: Path) -> None:
    recipe = tmp_path / "q.yaml"
    recipe.write_text(RECIPE.format(size=600))
    out = tmp_path / "s0"
    assert run_cli("run", str(recipe), "--out", str(out), "--num-shards", "4", "--shard-index", "0").returncode == 0
    levels = Counter(orjson.loads(x)["level"] for x in run_cli("cat", str(out)).stdout.splitlines())
    # A quarter of the slots holds every stratum, near its share (not one block per stratum).
    assert set(levels) == {"easy", "medium", "hard"}
    assert 50 <= levels["easy"] <= 100
