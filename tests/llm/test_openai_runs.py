"""LLM runs against a real HTTP server on loopback (the fake OpenAI-compatible server)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import jsonschema
import orjson
import pytest

from helpers import cli_env, llm_recipe

KEY = "sk-SENTINEL-0123456789abcdef"


def run(run_cli, *args: str, key: str = KEY) -> subprocess.CompletedProcess:
    env = cli_env()
    env["DATAMILL_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "datamill", *args], capture_output=True, text=True, env=env, timeout=240
    )


def records(run_cli, out: Path) -> list[dict]:
    return [orjson.loads(x) for x in run_cli("cat", str(out)).stdout.splitlines()]


def attempts(out: Path) -> list[dict]:
    return [orjson.loads(x) for x in (out / "logs" / "attempts.jsonl").read_bytes().splitlines()]


def test_contract_recipe_runs_with_size_and_out(run_cli, fake_server, tmp_path: Path) -> None:
    srv = fake_server("--latency-ms", "5")
    recipe = tmp_path / "topics.yaml"
    recipe.write_text(llm_recipe(srv.base_url, size=1000).replace("output: {part_size: 50}\n", ""))
    out = tmp_path / "run"
    res = run(run_cli, "run", str(recipe), "--size", "120", "--out", str(out))
    assert res.returncode == 0, res.stderr
    recs = records(run_cli, out)
    assert len(recs) == 120
    for r in recs:
        assert r["answer"].endswith(f"topic {r['topic']}")
    st = srv.stats()
    # Every slot is its own request (per-slot seed), even if two slots had the same prompt.
    assert st["requests"] == 120 and st["distinct_requests"] == 120
    assert st["max_in_flight"] > 1
    lines = attempts(out)
    assert len(lines) == 120
    fields = {"ts", "run_id", "slot", "column", "attempt", "backend", "model", "status", "http_status", "error",
              "latency_ms", "prompt_tokens", "completion_tokens", "pack", "repairs", "cost_usd"}  # fmt: skip
    assert all(fields <= set(x) for x in lines)
    assert {x["status"] for x in lines} == {"ok"}


def test_same_prompt_in_two_slots_is_two_requests(run_cli, fake_server, tmp_path: Path) -> None:
    srv = fake_server()
    col = '{llm: {prompt: "Tell me a fact.", max_tokens: 16}}'
    recipe = tmp_path / "r.yaml"
    recipe.write_text(llm_recipe(srv.base_url, size=30, column=col))
    out = tmp_path / "run"
    assert run(run_cli, "run", str(recipe), "--out", str(out)).returncode == 0
    assert srv.stats()["distinct_requests"] == 30
    assert len({r["answer"] for r in records(run_cli, out)}) == 30


def test_faults_of_every_kind_end_every_slot_and_resume_redoes_nothing(run_cli, fake_server, tmp_path: Path) -> None:
    srv = fake_server("--fault-rate", "0.10", "--timeout-sleep-s", "3", "--seed", "5")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(llm_recipe(srv.base_url, size=300, model={"timeout_s": 1, "max_retries": 1}))
    out = tmp_path / "run"
    t0 = time.monotonic()
    res = run(run_cli, "run", str(recipe), "--out", str(out), "--workers", "2")
    assert time.monotonic() - t0 < 180, "no hang"
    assert res.returncode in (0, 1), res.stderr
    st = srv.stats()
    assert set(st["statuses"]) >= {"ok", "rate_limited", "server_error", "timeout", "truncated", "invalid_json"}
    status = orjson.loads(run_cli("status", str(out), "--json").stdout)
    assert status["slots_done"] + status["slots_failed"] == 300 and status["slots_remaining"] == 0
    recs = records(run_cli, out)
    ids = [r["sample_id"] for r in recs]
    assert len(ids) == len(set(ids)) == status["slots_done"]
    events = [orjson.loads(x) for x in (out / "logs" / "run.jsonl").read_bytes().splitlines()]
    failed = [e for e in events if e["event"] == "slot_failed"]
    assert len(failed) == status["slots_failed"]
    assert all(e["reason"].startswith("answer: ") for e in failed)
    # Rate-limited attempts are retried, never the final word on a slot.
    assert not any(a["status"] == "failed" and a["error"] == "rate_limited" for a in attempts(out))
    # Remove every part and run again: everything answered comes from the cache.
    before = srv.stats()["requests"]
    for p in (out / "parts").iterdir():
        p.unlink()
    res2 = run(run_cli, "run", str(recipe), "--out", str(out))
    after = srv.stats()["requests"]
    answered = status["slots_done"]
    new_requests = after - before
    # Only slots that failed before may ask again (at most 2 attempts each with max_retries 1).
    assert new_requests <= 2 * status["slots_failed"]
    recs2 = records(run_cli, out)
    by_id = {r["sample_id"]: r for r in recs2}
    for r in recs:
        assert by_id[r["sample_id"]] == r
    assert res2.returncode in (0, 1) and answered <= len(recs2)


def test_kill_9_mid_run_then_resume_loses_nothing_and_rerequests_nothing_cached(
    run_cli, fake_server, tmp_path: Path
) -> None:
    srv = fake_server("--latency-ms", "30")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(llm_recipe(srv.base_url, size=400, part_size=40, model={"concurrency": 8}))
    clean = tmp_path / "clean"
    assert run(run_cli, "run", str(recipe), "--out", str(clean)).returncode == 0
    reference = run_cli("cat", str(clean)).stdout
    srv.reset()
    out = tmp_path / "run"
    env = cli_env()
    env["DATAMILL_API_KEY"] = KEY
    proc = subprocess.Popen(
        [sys.executable, "-m", "datamill", "run", str(recipe), "--out", str(out), "--workers", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        parts = list((out / "parts").glob("*.jsonl")) if (out / "parts").is_dir() else []
        if len(parts) >= 3:
            break
        time.sleep(0.01)
    time.sleep(0.15)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    committed_before = {p.name: p.read_bytes() for p in (out / "parts").glob("*.jsonl")}
    assert 0 < len(committed_before) < 10
    with sqlite3.connect(out / "cache" / "llm.sqlite") as db:
        cached = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    sent_before = srv.stats()["requests"]
    assert run(run_cli, "run", str(recipe), "--out", str(out)).returncode == 0
    sent_after = srv.stats()["requests"]
    # Exactly the responses the cache lacked were requested again; nothing cached was.
    assert sent_after - sent_before == 400 - cached
    assert srv.stats()["distinct_requests"] == 400
    for name, data in committed_before.items():
        assert (out / "parts" / name).read_bytes() == data
    assert run_cli("cat", str(out)).stdout == reference
    ids = [orjson.loads(x)["sample_id"] for x in reference.splitlines()]
    assert len(ids) == len(set(ids)) == 400


def test_api_key_never_written_even_when_echoed(run_cli, fake_server, tmp_path: Path) -> None:
    srv = fake_server("--echo-auth", "--fault-rate", "0.3", "--seed", "2", "--timeout-sleep-s", "2")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(llm_recipe(srv.base_url, size=80, model={"timeout_s": 1, "max_retries": 0}))
    out = tmp_path / "run"
    res = run(run_cli, "run", str(recipe), "--out", str(out))
    assert res.returncode in (0, 1)
    assert srv.stats()["statuses"].get("server_error", 0) > 0
    rep = run(run_cli, "report", str(out), "--telemetry", "--json")
    st = run(run_cli, "status", str(out))
    cat = run(run_cli, "cat", str(out))
    for text in (res.stdout, res.stderr, rep.stdout, rep.stderr, st.stdout, cat.stdout):
        assert KEY not in text
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "llm.sqlite" for p in files)
    for p in files:
        assert KEY.encode() not in p.read_bytes(), p


def test_missing_api_key_env_is_bad_input(run_cli, fake_server, tmp_path: Path) -> None:
    srv = fake_server()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(llm_recipe(srv.base_url, size=5))
    env = cli_env()
    env.pop("DATAMILL_API_KEY", None)
    res = subprocess.run(
        [sys.executable, "-m", "datamill", "run", str(recipe), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert res.returncode == 2
    assert "DATAMILL_API_KEY is not set" in res.stderr


SCHEMA_COL = """{llm: {prompt: "Describe topic {{ topic }}", max_tokens: 64,
    schema: {type: object, properties: {title: {type: string, minLength: 3}, score: {type: integer, minimum: 1, maximum: 5}},
             required: [title, score], additionalProperties: false}}}"""


@pytest.mark.parametrize(
    "reject",
    [[], ["--reject-format", "json_schema"], ["--reject-format", "json_schema", "--reject-format", "json_object"]],
)
def test_structured_output_falls_back_when_a_server_refuses_a_format(
    run_cli, fake_server, tmp_path: Path, reject: list[str]
) -> None:
    srv = fake_server("--fault-rate", "0.1", "--seed", "9", *reject)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(llm_recipe(srv.base_url, size=60, column=SCHEMA_COL, model={"timeout_s": 2}))
    out = tmp_path / "run"
    res = run(run_cli, "run", str(recipe), "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    schema = {"type": "object", "properties": {"title": {"type": "string", "minLength": 3},
              "score": {"type": "integer", "minimum": 1, "maximum": 5}}, "required": ["title", "score"],
              "additionalProperties": False}  # fmt: skip
    recs = records(run_cli, out)
    assert len(recs) == 60
    for r in recs:
        jsonschema.validate(r["answer"], schema)
    lines = attempts(out)
    if reject:
        assert srv.stats()["statuses"].get("rejected_format", 0) >= 1
    # invalid_json faults were answered by a repair prompt, recorded as such.
    reasks = [a for a in lines if "reask" in a["repairs"]]
    assert reasks and all(a["status"] == "repaired" for a in reasks)
    assert any(a["error"] == "invalid_json" and a["status"] == "retry" for a in lines)


def test_packing_cuts_prompt_tokens_and_keeps_answers_on_their_slot(run_cli, fake_server, tmp_path: Path) -> None:
    system = " ".join(["You are a careful writer who answers briefly and precisely."] * 20)  # 200 words

    def col(pack: int) -> str:
        return f'{{llm: {{system: "{system}", prompt: "Write one sentence about topic {{{{ topic }}}}", max_tokens: 32, pack: {pack}}}}}'

    results = {}
    for pack in (1, 8):
        srv = fake_server()
        recipe = tmp_path / f"r{pack}.yaml"
        recipe.write_text(llm_recipe(srv.base_url, size=160, column=col(pack), part_size=40))
        out = tmp_path / f"run{pack}"
        res = run(run_cli, "run", str(recipe), "--out", str(out))
        assert res.returncode == 0, res.stderr
        results[pack] = (srv.stats(), records(run_cli, out), out, res.stdout)
    unpacked_tokens = results[1][0]["prompt_tokens"]
    packed_tokens = results[8][0]["prompt_tokens"]
    assert results[8][0]["requests"] == 160 // 8
    # Expected: per request, one system prompt (200 words) plus the packing note, and 8 items of
    # 6 words plus an "Item i:" label, against 8 x (200 + 6) unpacked.
    from datamill.columns.llm import PACK_INSTRUCTIONS

    note = len(PACK_INSTRUCTIONS.format(k=8).split())
    expected = 20 * (200 + note + 8 * (6 + 2))
    assert unpacked_tokens == 160 * (200 + 6)
    assert packed_tokens == expected
    assert packed_tokens < unpacked_tokens / 4
    # The summary reports what was sent and what unpacked would have cost (an estimate).
    summary = results[8][3]
    assert f"{packed_tokens:,} prompt sent" in summary
    est = int(summary.split("prompt sent (")[1].split(" unpacked")[0].replace(",", ""))
    assert abs(est - unpacked_tokens) / unpacked_tokens < 0.2
    # Every answer is tied to its own slot: it names that slot's topic.
    for r in results[8][1]:
        assert r["answer"].endswith(f"topic {r['topic']}"), r
    assert len(results[8][1]) == 160
    assert Counter(a["pack"] for a in attempts(results[8][2])) == Counter({8: 20})


def test_budget_stops_cleanly_and_resumes(run_cli, fake_server, tmp_path: Path) -> None:
    srv = fake_server()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(llm_recipe(srv.base_url, size=200, part_size=20, model={"max_tokens": 1500, "concurrency": 4}))
    clean = tmp_path / "clean"
    recipe_free = tmp_path / "free.yaml"
    recipe_free.write_text(llm_recipe(srv.base_url, size=200, part_size=20, model={"concurrency": 4}))
    assert run(run_cli, "run", str(recipe_free), "--out", str(clean)).returncode == 0
    srv.reset()
    out = tmp_path / "run"
    res = run(run_cli, "run", str(recipe), "--out", str(out), "--workers", "1")
    assert res.returncode == 1
    assert "stopped: token budget spent" in res.stdout
    st = orjson.loads(run_cli("status", str(out), "--json").stdout)
    assert 0 < st["slots_done"] < 200 and st["last_stop"] == "budget"
    # The budget is for the run dir, across invocations: running the same command again goes on
    # only while the budget allows, and the tokens the server counted never pass it.
    for _ in range(3):
        res = run(run_cli, "run", str(recipe), "--out", str(out), "--workers", "1")
        assert res.returncode == 1 and "stopped: token budget spent" in res.stdout
        st = srv.stats()
        assert 0 < st["prompt_tokens"] + st["completion_tokens"] <= 1500
    # A budget is operational, not part of the output: the budget-free recipe resumes here and
    # finishes byte-identical to the run that never had a budget.
    assert run(run_cli, "run", str(recipe_free), "--out", str(out)).returncode == 0
    assert run_cli("cat", str(out)).stdout == run_cli("cat", str(clean)).stdout
