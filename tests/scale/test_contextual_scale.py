"""Scale (marked; `make test-scale`, run by CI): seed 000's 10k run in 10 parallel shards, verified."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from helpers import cli_env

pytestmark = pytest.mark.scale


@pytest.mark.timeout(900)
def test_10k_in_10_parallel_shards_extracts_and_verifies(run_cli, tmp_path: Path) -> None:
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "datamill",
                "run",
                "contextual",
                "--size",
                "10000",
                "--seed",
                "42",
                "--num-shards",
                "10",
                "--shard-index",
                str(s),
                "--integration-span-cap",
                "3",
                "--workers",
                "1",
                "--progress",
                "none",
                "--out",
                str(tmp_path / f"shard{s}"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=cli_env(),
        )
        for s in range(10)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    merged = tmp_path / "10k.jsonl"
    assert run_cli("merge", *[str(tmp_path / f"shard{s}") for s in range(10)], "--out", str(merged)).returncode == 0
    extracted = tmp_path / "x.jsonl"
    assert run_cli("extract", "contextual", "--in", str(merged), "--out", str(extracted), timeout=600).returncode == 0
    report = tmp_path / "r.json"
    res = run_cli("verify", str(extracted), "--report", str(report), "--perf-budget-sec-per-100", "2.0", timeout=600)
    assert res.returncode == 0, res.stdout
    rep = orjson.loads(report.read_bytes())
    s = rep["summary"]
    assert rep["header"]["num_items"] == 10_000 and s["duplicate_sample_ids"] == []
    assert s["long_context_quota"]["ok"] and s["long_context_count"] == 300
    assert s["token_length_stats"]["p90"] >= 8000
    assert s["integration_spans_over_cap_count"] == 0
    assert all(g["passed"] for g in s["gates"]), s["gates"]
