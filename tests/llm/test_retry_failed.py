"""Issue 12 (item 4): `run --retry-failed` re-runs only the slots that ended failed in committed
parts; every other record stays byte for byte, nothing that succeeded is asked again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from helpers import cli_env, llm_recipe


def datamill(*args: str) -> subprocess.CompletedProcess:
    env = cli_env() | {"DATAMILL_API_KEY": "sk-test"}
    return subprocess.run([sys.executable, "-m", "datamill", *args], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip


def test_retry_failed_requests_only_the_failed_rows(fake_server, tmp_path: Path) -> None:
    faulty = fake_server("--fault-rate", "0.1", "--seed", "3")
    out = tmp_path / "run"
    recipe = tmp_path / "r.yaml"
    # No retries: every injected fault (but 429s, which always retry) fails its slot.
    recipe.write_text(llm_recipe(faulty.base_url, size=300, part_size=50, model={"max_retries": 0}))
    res = datamill("run", str(recipe), "--out", str(out), "--workers", "2")
    assert res.returncode == 1, res.stderr
    first = [orjson.loads(x) for x in datamill("cat", str(out)).stdout.splitlines()]
    st = orjson.loads(datamill("status", str(out), "--json").stdout)
    n_failed = st["slots_failed"]
    assert 5 <= n_failed <= 60, st
    assert sum(st["failure_reasons"].values()) == n_failed
    assert set(st["failure_reasons"]) <= {"answer: server_error", "answer: timeout", "answer: invalid_response",
                                          "answer: connection"}, st["failure_reasons"]  # fmt: skip
    done_slots = {int(r["sample_id"].split(":")[2]) for r in first}
    # The same recipe, pointed at a healthy server (the address is operational: same run).
    healthy = fake_server()
    recipe.write_text(llm_recipe(healthy.base_url, size=300, part_size=50, model={"max_retries": 0}))
    res = datamill("run", str(recipe), "--out", str(out), "--workers", "2", "--retry-failed")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"retried: {n_failed:,} failed slots run again (0 still failed)" in res.stdout
    assert healthy.stats()["requests"] == n_failed  # only the failed rows were requested
    final = [orjson.loads(x) for x in datamill("cat", str(out)).stdout.splitlines()]
    assert len(final) == 300 and [int(r["sample_id"].split(":")[2]) for r in final] == list(range(300))
    kept = [r for r in final if int(r["sample_id"].split(":")[2]) in done_slots]
    assert kept == first  # every record that existed is unchanged
    assert orjson.loads(datamill("status", str(out), "--json").stdout)["slots_failed"] == 0
    assert datamill("fsck", str(out)).returncode == 0  # rewritten parts are sealed like any other
    # The retried rows are what a run without faults makes for those slots.
    clean = tmp_path / "clean"
    assert datamill("run", str(recipe), "--out", str(clean), "--workers", "2").returncode == 0
    clean_rows = [orjson.loads(x) for x in datamill("cat", str(clean)).stdout.splitlines()]
    retried = [r for r in final if int(r["sample_id"].split(":")[2]) not in done_slots]
    assert len(retried) == n_failed
    assert retried == [r for r in clean_rows if int(r["sample_id"].split(":")[2]) not in done_slots]
