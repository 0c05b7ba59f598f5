"""Columns, generators, failed slots, formats, and the read verbs (cat, merge, status, plan)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import orjson
import pytest

from helpers import reseal

GEN = '''
def pairs(ctx):
    """Yields n records; slot 13 raises, to prove a failed slot is counted, not lost."""
    if ctx.slot == 13:
        raise ValueError("planted failure")
    if ctx.slot % 10 == 7:
        ctx.drop("unlucky")
        return
    for k in range(ctx.inputs["n"]):
        yield {"k": k, "x": ctx.rng.random(), "word": ctx.params["word"]}
'''

RECIPE = """
name: cols
seed: 9
size: 40
params: {word: hi}
columns:
  topic: {sampler: categorical, values: {math: 3, art: 1}}
  n: {sampler: integer, low: 1, high: 3}
  temp: {sampler: uniform, low: 0.5, high: 1.5}
  style:
    sampler: conditional
    on: topic
    table:
      math: {formal: 1}
      art: {loose: 1, formal: 1}
  double: {expr: "n * 2"}
  greeting: {template: "{{ params.word }} {{ topic }} #{{ slot }}"}
  hidden: {expr: "n + 100", emit: false}
  gen: {generator: "./gen.py:pairs", inputs: [n]}
  after: {expr: "gen.k + hidden"}
output: {part_size: 8%s}
"""


@pytest.fixture
def recipe(tmp_path: Path):
    def make(output_extra: str = "", name: str = "r.yaml") -> Path:
        (tmp_path / "gen.py").write_text(GEN)
        p = tmp_path / name
        p.write_text(RECIPE % output_extra)
        return p

    return make


def test_columns_generators_and_failed_slots(run_cli, recipe, tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = run_cli("run", str(recipe()), "--out", str(out), "--workers", "2")
    # Slot 13 failed: the run finishes everything else, then exits 1 and names it.
    assert res.returncode == 1, res.stderr
    assert "failed slot 13: gen: ValueError: planted failure" in res.stdout
    assert "1 failed" in res.stdout
    records = [orjson.loads(x) for x in run_cli("cat", str(out)).stdout.splitlines()]
    slots = Counter(int(r["sample_id"].split(":")[2]) for r in records)
    assert 13 not in slots
    assert all(s % 10 != 7 for s in slots)  # dropped slots emit nothing
    assert len(slots) == 40 - 1 - 4
    for r in records:
        assert list(r)[:4] == ["sample_id", "topic", "n", "temp"]
        assert "hidden" not in r and "gen" not in r
        assert slots[int(r["sample_id"].split(":")[2])] == r["n"]
        assert r["double"] == 2 * r["n"]
        assert 0.5 <= r["temp"] < 1.5
        assert r["style"] == "formal" if r["topic"] == "math" else r["style"] in ("loose", "formal")
        assert r["greeting"] == f"hi {r['topic']} #{r['sample_id'].split(':')[2]}"
        assert r["after"] == r["k"] + r["n"] + 100
        assert r["word"] == "hi"
    events = [orjson.loads(x) for x in (out / "logs" / "run.jsonl").read_bytes().splitlines()]
    failed = [e for e in events if e["event"] == "slot_failed"]
    assert [(e["slot"], e["reason"]) for e in failed] == [(13, "gen: ValueError: planted failure")]
    stop = events[-1]
    assert stop["event"] == "stop" and stop["slots_failed"] == 1 and stop["dropped"] == {"unlucky": 4}
    status = json.loads(run_cli("status", str(out), "--json").stdout)
    assert status["slots_done"] == 39 and status["slots_failed"] == 1 and status["slots_remaining"] == 0
    assert status["records"] == len(records)


@pytest.mark.parametrize("output", [", compression: zstd", ", format: parquet", ", format: parquet, compression: zstd"])
def test_formats_hold_the_same_records(run_cli, recipe, tmp_path: Path, output: str) -> None:
    base = tmp_path / "jsonl"
    run_cli("run", str(recipe()), "--out", str(base))
    other = tmp_path / "other"
    res = run_cli("run", str(recipe(output, name="r2.yaml")), "--out", str(other))
    assert res.returncode == 1  # the planted failure
    suffixes = {p.name.split(".", 1)[1] for p in (other / "parts").iterdir() if not p.name.endswith(".meta.json")}
    assert suffixes == ({"parquet"} if "parquet" in output else {"jsonl.zst"})
    a = [orjson.loads(x) for x in run_cli("cat", str(base)).stdout.splitlines()]
    b = [orjson.loads(x) for x in run_cli("cat", str(other)).stdout.splitlines()]
    assert a == b


def test_merge_refuses_overlapping_shards_naming_the_duplicate(run_cli, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli("run", "lambda-traces", "--size", "50", "--out", str(a)).returncode == 0
    # The same shard run twice into two dirs: every sample_id of b duplicates one of a.
    assert run_cli("run", "lambda-traces", "--size", "50", "--out", str(b)).returncode == 0
    out = tmp_path / "m.jsonl"
    res = run_cli("merge", str(a), str(b), "--out", str(out))
    assert res.returncode == 1
    assert "duplicate sample_id lambda-traces:0:0:0" in res.stderr
    assert not out.exists()


def test_merge_refuses_a_planted_duplicate_record(run_cli, tmp_path: Path) -> None:
    a = tmp_path / "a"
    assert run_cli("run", "lambda-traces", "--size", "30", "--out", str(a)).returncode == 0
    part = next(p for p in (a / "parts").iterdir() if p.name.endswith(".jsonl"))
    lines = part.read_bytes().splitlines(keepends=True)
    part.write_bytes(b"".join([*lines[:5], lines[2], *lines[5:]]))
    reseal(part)  # a duplicate committed as such (a writer's bug), not disk damage
    res = run_cli("merge", str(a), "--out", str(tmp_path / "m.jsonl"))
    assert res.returncode == 1
    sid = orjson.loads(lines[2])["sample_id"]
    assert sid in res.stderr


def test_merge_refuses_missing_shards_unless_partial(run_cli, tmp_path: Path) -> None:
    a = tmp_path / "a"
    run_cli("run", "lambda-traces", "--size", "100", "--out", str(a), "--num-shards", "2", "--shard-index", "1")
    res = run_cli("merge", str(a), "--out", str(tmp_path / "m.jsonl"))
    assert res.returncode == 1 and "50 of 100 slots have no committed part" in res.stderr
    res = run_cli("merge", str(a), "--out", str(tmp_path / "m.jsonl"), "--allow-partial")
    assert res.returncode == 0
    first = orjson.loads((tmp_path / "m.jsonl").read_bytes().splitlines()[0])
    assert first["sample_id"].split(":")[2] == "50"


def test_merge_refuses_different_recipes(run_cli, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    run_cli("run", "lambda-traces", "--size", "20", "--out", str(a), "--num-shards", "2", "--shard-index", "0")
    run_cli(
        "run",
        "lambda-traces",
        "--size",
        "20",
        "--seed",
        "1",
        "--out",
        str(b),
        "--num-shards",
        "2",
        "--shard-index",
        "1",
    )
    res = run_cli("merge", str(a), str(b), "--out", str(tmp_path / "m.jsonl"))
    assert res.returncode == 2 and "different recipes" in res.stderr


def test_status_of_a_partial_run_shows_remaining_and_eta(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_cli("run", "lambda-traces", "--size", "4000", "--out", str(out), "--num-shards", "2", "--shard-index", "0")
    res = run_cli("status", str(out))
    assert res.returncode == 0
    assert "2,000 done, 0 failed, 2,000 remaining of 4,000 (50.0%)" in res.stdout
    assert "records/s" in res.stdout
    st = json.loads(run_cli("status", str(out), "--json").stdout)
    assert st["slots_remaining"] == 2000 and st["eta_s"] is not None and st["eta_s"] > 0


def test_plan_recipes_and_cat_order(run_cli, tmp_path: Path) -> None:
    assert "lambda-traces" in run_cli("recipes").stdout
    plan = run_cli("plan", "lambda-traces", "--size", "2500", "--num-shards", "2").stdout
    assert "slots       2,500" in plan
    assert "cycle 9   max_depth=15, max_size=110" in plan
    assert "shard 0   slots [0, 1,250)" in plan and "shard 1   slots [1,250, 2,500)" in plan
    out = tmp_path / "run"
    run_cli("run", "lambda-traces", "--size", "2500", "--out", str(out), "--workers", "2")
    keys = [
        tuple(map(int, orjson.loads(x)["sample_id"].split(":")[2:]))
        for x in run_cli("cat", str(out)).stdout.splitlines()
    ]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


def test_plain_progress_lines_when_not_a_terminal(run_cli, tmp_path: Path) -> None:
    res = run_cli("run", "lambda-traces", "--size", "300", "--out", str(tmp_path / "r"))
    assert "[datamill] lambda-traces start: 0/300 slots" in res.stderr
    assert "[datamill] lambda-traces end: 300/300 slots (100.0%)" in res.stderr
    assert "records/s" in res.stderr and "ETA" in res.stderr
