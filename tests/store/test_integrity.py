"""Issue 21: run dirs detect their own damage and heal it. Every kind of damage is caught by cat,
merge, verify and fsck with one line naming the part and the right exit status; fsck --repair
then run restores output byte-identical to the undamaged run (an LLM recipe with no new request)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from datamill.store.integrity import seal
from helpers import cli_env, llm_recipe

RECIPE = """
name: lambda-integrity
seed: 5
size: 300
params: {{step_cap: 30, size_cap: 300}}
columns:
  trace: {{generator: "datamill.recipes.lambda_traces:generate"}}
output: {{part_size: 100, format: {fmt}, compression: {comp}}}
"""
FORMATS = {"jsonl": ("jsonl", "none"), "zstd": ("jsonl", "zstd"), "parquet": ("parquet", "none")}
SECOND = "part-000000000100-000000000200"


def datamill(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "datamill", *args], capture_output=True, text=True,
                          env=cli_env() | (env or {}), timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def base_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("integrity")
    runs = {}
    for key, (fmt, comp) in FORMATS.items():
        recipe = root / f"{key}.yaml"
        recipe.write_text(RECIPE.format(fmt=fmt, comp=comp))
        out = root / f"run-{key}"
        res = datamill("run", str(recipe), "--out", str(out), "--workers", "1", "--progress", "none")
        assert res.returncode == 0, res.stderr
        runs[key] = (recipe, out)
    return runs


def _part(run: Path, stem: str = SECOND) -> Path:
    [p] = [x for x in (run / "parts").glob(stem + ".*") if not x.name.endswith(".meta.json")]
    return p


def _flip_in_string(run: Path) -> None:
    p = _part(run)
    data = bytearray(p.read_bytes())
    i = data.index(b'"term":"') + len(b'"term":"') + 1
    data[i] = ord("x") if data[i] != ord("x") else ord("y")  # still valid JSON, another term
    p.write_bytes(bytes(data))


def _flip_structure(run: Path) -> None:
    p = _part(run)
    data = bytearray(p.read_bytes())
    i = data.index(b"\n{") + 1
    data[i] = ord("[")
    p.write_bytes(bytes(data))


def _edit_meta_counts(run: Path) -> None:
    meta = run / "parts" / (SECOND + ".meta.json")
    m = orjson.loads(meta.read_bytes())
    m["records"] += 5
    meta.write_bytes(orjson.dumps(m))


def _damage_parquet_footer(run: Path) -> None:
    p = _part(run)
    data = bytearray(p.read_bytes())
    data[-12:-4] = b"\x00" * 8  # the footer length and its end: same size, unreadable
    p.write_bytes(bytes(data))


# (id, format, damage, words in the line cat/merge/verify print, words fsck prints)
CASES: list[tuple[str, str, Callable[[Path], None], str, str]] = [
    ("truncated", "jsonl", lambda r: _part(r).write_bytes(_part(r).read_bytes()[:1000]), "truncated", "truncated"),
    ("flip-in-string", "jsonl", _flip_in_string, "content hash mismatch", "content hash mismatch"),
    ("flip-structure", "jsonl", _flip_structure, "content hash mismatch", "content hash mismatch"),
    ("deleted-part", "jsonl", lambda r: _part(r).unlink(), "have no committed part ([100, 200))", "orphan meta"),
    ("deleted-meta", "jsonl", lambda r: (r / "parts" / (SECOND + ".meta.json")).unlink(), "meta file", "meta file"),
    ("meta-counts-edited", "jsonl", _edit_meta_counts, "meta was edited", "meta was edited"),
    ("zstd-cut-short", "zstd", lambda r: _part(r).write_bytes(_part(r).read_bytes()[:-50]), "truncated", "truncated"),
    ("parquet-footer", "parquet", _damage_parquet_footer, "content hash mismatch", "content hash mismatch"),
]


def _one_error(res: subprocess.CompletedProcess) -> str:
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]


@pytest.mark.parametrize(("fmt", "damage", "words", "fsck_words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_damage_is_detected_by_every_reader(
    base_runs: dict[str, tuple[Path, Path]], tmp_path: Path, fmt: str, damage: Callable[[Path], None],
    words: str, fsck_words: str,
) -> None:  # fmt: skip
    run = tmp_path / "run"
    shutil.copytree(base_runs[fmt][1], run)
    damage(run)
    named = SECOND if words != "have no committed part ([100, 200))" else str(run)

    res = datamill("cat", str(run))
    assert res.returncode == 1, res.stderr
    line = _one_error(res)
    assert words in line and named in line, line
    if words != "content hash mismatch":
        assert res.stdout == "", "damage seen by a stat is reported before any record"

    merged = tmp_path / "merged.jsonl"
    res = datamill("merge", str(run), "--out", str(merged))
    assert res.returncode == 1 and words in _one_error(res), res.stderr
    assert not merged.exists(), "merge writes nothing"

    res = datamill("verify", str(run), "--no-tokens", "--report", str(tmp_path / "v.json"))
    assert res.returncode == 1 and words in _one_error(res), res.stderr
    assert not (tmp_path / "v.json").exists()

    res = datamill("fsck", str(run))
    assert res.returncode == 1, res.stdout + res.stderr
    assert any(fsck_words in x and SECOND in x for x in res.stdout.splitlines()), res.stdout
    assert "Traceback" not in res.stderr


def test_status_lists_damaged_and_missing_parts(base_runs: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(base_runs["jsonl"][1], run)
    _part(run).write_bytes(b"{}")
    _part(run, "part-000000000200-000000000300").unlink()
    res = datamill("status", str(run), "--json")
    st = orjson.loads(res.stdout)
    assert st["missing"] == [[100, 300]]
    assert len(st["damaged"]) == 1 and SECOND in st["damaged"][0] and "truncated" in st["damaged"][0]


def test_partial_reads_need_allow_partial(base_runs: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(base_runs["jsonl"][1], run)
    _part(run).unlink()
    full = datamill("cat", str(base_runs["jsonl"][1])).stdout.splitlines()
    res = datamill("cat", str(run), "--allow-partial")
    assert res.returncode == 0
    assert res.stdout.splitlines() == [
        x for x in full if not 100 <= int(orjson.loads(x)["sample_id"].split(":")[2]) < 200
    ]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_fsck_repair_then_run_restores_identical_output(
    base_runs: dict[str, tuple[Path, Path]], tmp_path: Path, fmt: str
) -> None:
    recipe, base = base_runs[fmt]
    run = tmp_path / "run"
    shutil.copytree(base, run)
    _flip_in_string(run) if fmt == "jsonl" else _damage_parquet_footer(run)
    (run / "parts" / "part-000000000200-000000000300.meta.json").unlink()
    assert datamill("run", str(recipe), "--out", str(run)).returncode == 1  # damaged parts are not resumed over
    res = datamill("fsck", str(run), "--repair")
    assert res.returncode == 0, res.stdout + res.stderr
    quarantined = sorted(p.name for p in (run / "quarantine").iterdir())
    assert quarantined == sorted([f"{SECOND}.meta.json", _part(base).name,
                                  "part-000000000200-000000000300" + _part(base).suffix])  # fmt: skip
    res = datamill("run", str(recipe), "--out", str(run), "--workers", "1")
    assert res.returncode == 0, res.stderr
    assert "2 parts run, 1 already committed" in res.stdout
    assert datamill("cat", str(run)).stdout == datamill("cat", str(base)).stdout
    assert datamill("fsck", str(run)).returncode == 0


def test_fsck_repair_of_an_llm_run_replays_the_cache(fake_server, tmp_path: Path) -> None:
    srv = fake_server("--latency-ms", "1")
    recipe = tmp_path / "llm.yaml"
    recipe.write_text(llm_recipe(srv.base_url, size=60, part_size=20))
    env = {"DATAMILL_API_KEY": "sk-test"}
    run = tmp_path / "run"
    assert datamill("run", str(recipe), "--out", str(run), "--workers", "1", env=env).returncode == 0
    before = datamill("cat", str(run)).stdout
    sent = srv.stats()["requests"]
    part = next(p for p in (run / "parts").glob("part-000000000020-000000000040.*") if p.suffix == ".jsonl")
    part.write_bytes(part.read_bytes()[:-7])
    assert datamill("fsck", str(run), "--repair").returncode == 0
    res = datamill("run", str(recipe), "--out", str(run), "--workers", "1", env=env)
    assert res.returncode == 0, res.stderr
    assert srv.stats()["requests"] == sent, "no request was repeated"
    assert datamill("cat", str(run)).stdout == before


def test_a_meta_with_wrong_types_is_one_line_not_a_traceback(
    base_runs: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(base_runs["jsonl"][1], run)
    meta = run / "parts" / (SECOND + ".meta.json")
    m = orjson.loads(meta.read_bytes())
    m["bytes"] = "5"
    meta.write_bytes(orjson.dumps(seal(m)))  # even re-sealed: a meta of the wrong shape is damage
    for verb in ("cat", "status", "fsck"):
        res = datamill(verb, str(run))
        assert "Traceback" not in res.stderr, res.stderr
        assert res.returncode == (0 if verb == "status" else 1), (verb, res.stdout, res.stderr)
    assert "bytes is str" in _one_error(datamill("cat", str(run)))
    # A meta stripped of its size and hashes is not taken for an old-format one: the manifest
    # says this run dir seals its metas.
    for key in ("meta_hash", "xxh3_128", "bytes"):
        m.pop(key)
    meta.write_bytes(orjson.dumps(m))
    line = _one_error(datamill("cat", str(run)))
    assert "the meta lacks bytes, xxh3_128, meta_hash" in line, line
