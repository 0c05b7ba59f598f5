"""Invariant 2: SIGKILL at any moment, resume, and get exactly the uninterrupted output."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from helpers import cli_env

RECIPE = """
name: lambda-small-parts
seed: 11
size: 6000
params: {step_cap: 40, size_cap: 400}
cycles:
  max_depth: [6, 8, 10, 12]
  max_size: [80, 120, 160, 200]
columns:
  trace: {generator: "datamill.recipes.lambda_traces:generate"}
output: {part_size: 150}
"""


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("recipe") / "lt.yaml"
    p.write_text(RECIPE)
    return p


def start_run(recipe: Path, out: Path, workers: int) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "datamill",
            "run",
            str(recipe),
            "--out",
            str(out),
            "--workers",
            str(workers),
            "--progress",
            "none",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=cli_env(),
        start_new_session=True,  # its own process group: the kill takes its workers too
    )


def committed(out: Path) -> int:
    parts = out / "parts"
    return len([p for p in parts.iterdir() if p.name.endswith(".jsonl")]) if parts.is_dir() else 0


@pytest.fixture(scope="module")
def uninterrupted(run_cli, recipe: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("clean") / "run"
    res = run_cli("run", str(recipe), "--out", str(out))
    assert res.returncode == 0, res.stderr
    return run_cli("cat", str(out)).stdout.encode()


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_at_random_moments_then_resume_is_exact(
    run_cli, recipe: Path, uninterrupted: bytes, tmp_path: Path, workers: int
) -> None:
    out = tmp_path / "run"
    rnd = random.Random(1234 + workers)
    total_parts = 40
    # Kill points: one during start-up, the rest after a random number of committed parts plus a
    # random few milliseconds, so kills land before, during and right after part commits.
    targets = [0, *sorted(rnd.sample(range(1, total_parts - 2), 6))]
    kills = []
    for target in targets:
        proc = start_run(recipe, out, workers)
        deadline = time.monotonic() + 120
        while committed(out) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rnd.uniform(0.0, 0.08))
        if proc.poll() is not None:
            continue  # finished before this kill point
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kills.append(committed(out))
    assert len(kills) >= 5, f"only {len(kills)} kills landed before the run finished: {kills}"
    assert any(0 < n < total_parts for n in kills), kills
    final = start_run(recipe, out, workers)
    assert final.wait(timeout=240) == 0
    assert committed(out) == total_parts
    assert [p.name for p in (out / "parts").iterdir() if ".tmp-" in p.name] == []
    data = run_cli("cat", str(out)).stdout.encode()
    assert data == uninterrupted
    ids = [orjson.loads(line)["sample_id"] for line in data.splitlines()]
    assert len(ids) == len(set(ids))
    merged = tmp_path / "merged.jsonl"
    assert run_cli("merge", str(out), "--out", str(merged)).returncode == 0
    assert merged.read_bytes() == uninterrupted
    events = [orjson.loads(x) for x in (out / "logs" / "run.jsonl").read_bytes().splitlines()]
    # A kill during start-up may land before the start event; a killed run never logs a stop.
    starts = sum(1 for e in events if e["event"] == "start")
    assert 2 <= starts <= len(kills) + 1
    assert sum(1 for e in events if e["event"] == "stop") == 1
    assert events[-1]["event"] == "stop" and events[-1]["reason"] == "completed"


def test_resume_runs_only_missing_parts(run_cli, recipe: Path, uninterrupted: bytes, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert run_cli("run", str(recipe), "--out", str(out)).returncode == 0
    parts = sorted(p for p in (out / "parts").iterdir() if p.name.endswith(".jsonl"))
    mtimes = {p.name: p.stat().st_mtime_ns for p in parts}
    victim = parts[1]
    victim.unlink()
    res = run_cli("run", str(recipe), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "1 parts run" in res.stdout
    for p in parts:
        if p != victim:
            assert p.stat().st_mtime_ns == mtimes[p.name], f"{p.name} was rewritten"
    assert run_cli("cat", str(out)).stdout.encode() == uninterrupted


def test_other_recipe_hash_is_refused(run_cli, recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert run_cli("run", str(recipe), "--out", str(out), "--size", "300").returncode == 0
    before = sorted(p.name for p in (out / "parts").iterdir())
    res = run_cli("run", str(recipe), "--size", "301", "--out", str(out))
    assert res.returncode == 2
    assert "hash" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in (out / "parts").iterdir()) == before


def test_sigterm_stops_cleanly_and_logs_it(run_cli, recipe: Path, uninterrupted: bytes, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "datamill", "run", str(recipe), "--out", str(out), "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    deadline = time.monotonic() + 60
    while committed(out) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert "re-run the same command to resume" in err
    events = [orjson.loads(x) for x in (out / "logs" / "run.jsonl").read_bytes().splitlines()]
    assert events[-1]["event"] == "stop" and events[-1]["reason"] == "interrupted"
    assert run_cli("run", str(recipe), "--out", str(out)).returncode == 0
    assert run_cli("cat", str(out)).stdout.encode() == uninterrupted
