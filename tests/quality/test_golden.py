"""Golden sets: balanced fixed slots; a run passes against its own baseline, fails past tolerance."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson

RECIPE = """
name: gold
seed: 2
size: 5000
params: {adj: bright}
columns:
  region: {sampler: categorical, values: {north: 5, south: 3, east: 1, west: 1}}
  age: {sampler: categorical, values: [young, mid, old]}
  n: {sampler: integer, low: 1, high: 9}
  text: {template: "A {{ params.adj }} {{ age }} person from the {{ region }} with {{ n }} plans."}
"""


def test_golden_create_is_balanced_and_fixed(run_cli, tmp_path: Path) -> None:
    recipe = tmp_path / "g.yaml"
    recipe.write_text(RECIPE)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for out in (a, b):
        res = run_cli("golden", "create", str(recipe), "--size", "120", "--stratify", "region,age", "--out", str(out))
        assert res.returncode == 0, res.stderr
    doc = orjson.loads(a.read_bytes())
    assert a.read_bytes() == b.read_bytes()  # fixed: the same slots every time
    assert len(doc["slots"]) == 120 == len(set(doc["slots"]))
    assert len(doc["cells"]) == 12 and {c["count"] for c in doc["cells"]} == {10}
    # Independently: regenerate the slots' region/age with a full run and count the cells.
    out = tmp_path / "run"
    assert run_cli("run", str(recipe), "--out", str(out), "--size", "5000").returncode == 0
    recs = {
        int(r["sample_id"].split(":")[2]): r for r in map(orjson.loads, run_cli("cat", str(out)).stdout.splitlines())
    }
    cells = Counter((recs[s]["region"], recs[s]["age"]) for s in doc["slots"])
    assert set(cells.values()) == {10} and len(cells) == 12


def test_golden_run_passes_on_its_baseline_and_fails_past_tolerance(run_cli, tmp_path: Path) -> None:
    recipe = tmp_path / "g.yaml"
    recipe.write_text(RECIPE)
    g = tmp_path / "golden.json"
    assert (
        run_cli("golden", "create", str(recipe), "--size", "60", "--stratify", "age", "--out", str(g)).returncode == 0
    )
    base = tmp_path / "base.json"
    assert run_cli("golden", "run", str(recipe), "--golden", str(g), "--out", str(base)).returncode == 0
    same = run_cli("golden", "run", str(recipe), "--golden", str(g), "--baseline", str(base))
    assert same.returncode == 0 and "overall: PASS" in same.stdout
    assert "PASS pass_rate: 1.0 vs baseline 1.0 (±0.05)" in same.stdout
    # A longer adjective pushes the text length metrics past their 10% tolerance.
    pushed = run_cli(
        "golden",
        "run",
        str(recipe),
        "--golden",
        str(g),
        "--baseline",
        str(base),
        "--param",
        "adj=extraordinarily_bright",
    )
    assert pushed.returncode == 1 and "overall: FAIL" in pushed.stdout
    assert "FAIL chars.text.p50" in pushed.stdout
    # A baseline nudged past an absolute tolerance fails too.
    doc = orjson.loads(base.read_bytes())
    doc["metrics"]["duplication_rate"] += 0.03  # tolerance 0.02 (seed 003)
    base.write_bytes(orjson.dumps(doc))
    nudged = run_cli("golden", "run", str(recipe), "--golden", str(g), "--baseline", str(base))
    assert nudged.returncode == 1 and "FAIL duplication_rate" in nudged.stdout
    looser = run_cli(
        "golden",
        "run",
        str(recipe),
        "--golden",
        str(g),
        "--baseline",
        str(base),
        "--tolerance",
        "duplication_rate=0.05",
    )
    assert looser.returncode == 0
