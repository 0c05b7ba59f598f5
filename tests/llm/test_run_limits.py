"""Issues 12 (item 2) and 22: concurrency, rpm and budgets hold for the run as a whole, whatever
the number of worker processes, and a budget is a hard cap counted at the server, across every
invocation of one run dir, under faults and SIGKILL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from helpers import cli_env, llm_recipe

PRICED = {"price_prompt_per_1k": 1.0, "price_completion_per_1k": 1.0}


def datamill(*args: str) -> subprocess.CompletedProcess:
    env = cli_env() | {"DATAMILL_API_KEY": "sk-test"}
    return subprocess.run([sys.executable, "-m", "datamill", *args], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip


def server_cost(srv) -> float:
    """What the server billed, from its own usage counts, at $1 per 1K tokens of either kind."""
    st = srv.stats()
    return (st["prompt_tokens"] + st["completion_tokens"]) / 1000.0


def test_concurrency_holds_across_workers(fake_server, tmp_path: Path) -> None:
    srv = fake_server("--latency-ms", "100")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(llm_recipe(srv.base_url, size=240, part_size=40, model={"concurrency": 8}))
    res = datamill("run", str(recipe), "--out", str(tmp_path / "run"), "--workers", "2")
    assert res.returncode == 0, res.stderr
    st = srv.stats()
    assert st["requests"] == 240
    assert st["max_in_flight"] <= 8, st  # 2 workers, one limit: not 16
    assert st["max_in_flight"] >= 6, st  # and the limit is used, not serialised


def test_rpm_holds_across_workers_and_parts(fake_server, tmp_path: Path) -> None:
    srv = fake_server()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(llm_recipe(srv.base_url, size=160, part_size=20, model={"rpm": 1200}))
    t0 = time.monotonic()
    res = datamill("run", str(recipe), "--out", str(tmp_path / "run"), "--workers", "2")
    elapsed = time.monotonic() - t0
    assert res.returncode == 0, res.stderr
    assert srv.stats()["requests"] == 160
    # 1200/min = 20/s with one second of burst: 160 requests need >= (160 - 20) / 20 = 7 s run-wide.
    # Per-process buckets on 2 workers would have taken ~3.5 s.
    stamps = sorted(
        orjson.loads(x)["ts"] for x in (tmp_path / "run" / "logs" / "attempts.jsonl").read_bytes().splitlines()
    )
    assert elapsed >= 7.0 * 0.9, elapsed
    assert len(stamps) == 160


def test_cost_budget_is_a_hard_cap_and_resumes_identically(fake_server, tmp_path: Path) -> None:
    srv = fake_server()
    capped = tmp_path / "capped.yaml"
    capped.write_text(llm_recipe(srv.base_url, size=4000, part_size=200, model={**PRICED, "max_cost_usd": 0.5}))
    out = tmp_path / "run"
    res = datamill("run", str(capped), "--out", str(out), "--workers", "2")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "stopped: cost budget spent" in res.stdout
    assert 0 < server_cost(srv) <= 0.5, srv.stats()
    st = orjson.loads(datamill("status", str(out), "--json").stdout)
    [budget] = st["budget"]
    assert budget["max_cost_usd"] == 0.5 and 0 < budget["spent_usd"] <= 0.5
    assert budget["remaining_cost_usd"] >= 0
    # A resume with a larger budget finishes byte-identical to a run that had enough from the start.
    larger = tmp_path / "larger.yaml"
    larger.write_text(llm_recipe(srv.base_url, size=4000, part_size=200, model={**PRICED, "max_cost_usd": 1000}))
    res = datamill("run", str(larger), "--out", str(out), "--workers", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    free = tmp_path / "free.yaml"
    free.write_text(llm_recipe(srv.base_url, size=4000, part_size=200, model=PRICED))
    clean = tmp_path / "clean"
    assert datamill("run", str(free), "--out", str(clean), "--workers", "2").returncode == 0
    assert datamill("cat", str(out)).stdout == datamill("cat", str(clean)).stdout


def test_budget_holds_under_faults_and_sigkill(fake_server, tmp_path: Path) -> None:
    srv = fake_server("--fault-rate", "0.1", "--seed", "5", "--latency-ms", "20", "--timeout-sleep-s", "0.5")
    recipe = tmp_path / "r.yaml"
    budget = 1.5
    recipe.write_text(llm_recipe(srv.base_url, size=2000, part_size=100,
                                 model={**PRICED, "max_cost_usd": budget, "timeout_s": 0.3}))  # fmt: skip
    out = tmp_path / "run"
    env = cli_env() | {"DATAMILL_API_KEY": "sk-test"}
    for delay in (0.3, 0.1):  # killed with requests in flight, twice
        seen = srv.stats()["requests"]
        proc = subprocess.Popen([sys.executable, "-m", "datamill", "run", str(recipe), "--out", str(out),
                                 "--workers", "2", "--progress", "none"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 30  # a loaded machine may take seconds to start: kill once it sends
        while srv.stats()["requests"] == seen and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(delay)
        # A run that spent its budget may end before the kill: the runs below check the budget all the same.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for _ in range(3):  # the same budget again: it goes on only while the budget allows
        res = datamill("run", str(recipe), "--out", str(out), "--workers", "2")
        assert res.returncode == 1 and "budget spent" in res.stdout, res.stdout + res.stderr
    time.sleep(0.6)  # let requests stalled by 'timeout' faults finish at the server
    assert 0 < server_cost(srv) <= budget, srv.stats()


def test_request_budget(fake_server, tmp_path: Path) -> None:
    srv = fake_server("--latency-ms", "5")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(llm_recipe(srv.base_url, size=300, part_size=50, model={"max_requests": 70}))
    out = tmp_path / "run"
    res = datamill("run", str(recipe), "--out", str(out), "--workers", "2")
    assert res.returncode == 1 and "request budget spent" in res.stdout, res.stdout
    assert srv.stats()["requests"] <= 70
    assert datamill("run", str(recipe), "--out", str(out), "--workers", "2").returncode == 1
    assert srv.stats()["requests"] <= 70  # across invocations


def test_budget_holds_for_shards_run_at_the_same_time_into_one_dir(fake_server, tmp_path: Path) -> None:
    srv = fake_server("--latency-ms", "20")
    recipe = tmp_path / "r.yaml"
    # Small reservations (8 completion tokens, 2 in flight): each shard alone would spend most of
    # the budget, so two shards that did not share it would pass it.
    column = '{llm: {prompt: "Write one sentence about topic {{ topic }}", max_tokens: 8}}'
    model = {**PRICED, "max_cost_usd": 0.8, "concurrency": 2}
    recipe.write_text(llm_recipe(srv.base_url, size=2000, part_size=100, model=model, column=column))
    out = tmp_path / "run"
    env = cli_env() | {"DATAMILL_API_KEY": "sk-test"}
    procs = [
        subprocess.Popen([sys.executable, "-m", "datamill", "run", str(recipe), "--out", str(out), "--num-shards", "2",
                          "--shard-index", str(s), "--workers", "1", "--progress", "none"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for s in (0, 1)
    ]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [1, 1], outs
    assert all("cost budget spent" in o for o, _ in outs), outs
    assert 0 < server_cost(srv) <= 0.8, srv.stats()  # one budget for both shards, not 2 x 0.8
