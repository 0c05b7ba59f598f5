"""Model overrides per column, rate limits, prompt trimming, telemetry report, context probe."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson

from datamill.llm.telemetry import summarize
from helpers import cli_env


def run(*args: str) -> subprocess.CompletedProcess:
    env = cli_env()
    env["DATAMILL_API_KEY"] = "k"
    return subprocess.run(
        [sys.executable, "-m", "datamill", *args], capture_output=True, text=True, env=env, timeout=300
    )


def attempts(out: Path) -> list[dict]:
    return [orjson.loads(x) for x in (out / "logs" / "attempts.jsonl").read_bytes().splitlines()]


def test_planner_and_worker_models_in_one_recipe(fake_server, tmp_path: Path) -> None:
    srv = fake_server()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
name: plan-work
size: 12
model: {{backend: openai, base_url: "{srv.base_url}", model: cheap-worker, concurrency: 8}}
columns:
  topic: {{sampler: categorical, values: [maths, music, maps]}}
  plan: {{llm: {{prompt: "Plan a question about {{{{ topic }}}}", model: {{model: strong-planner}}}}}}
  case: {{llm: {{prompt: "Write the case for: {{{{ plan }}}}"}}}}
""")
    out = tmp_path / "run"
    res = run("run", str(recipe), "--out", str(out))
    assert res.returncode == 0, res.stderr
    models = {(a["column"], a["model"]) for a in attempts(out)}
    assert models == {("plan", "strong-planner"), ("case", "cheap-worker")}
    recs = [orjson.loads(x) for x in run("cat", str(out)).stdout.splitlines()]
    for r in recs:
        assert r["topic"] in r["plan"] and r["plan"][:40] in r["case"]


def test_rpm_limit_spaces_requests(fake_server, tmp_path: Path) -> None:
    srv = fake_server()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
name: limited
size: 25
model: {{backend: openai, base_url: "{srv.base_url}", model: m, concurrency: 64, rpm: 600}}
columns:
  x: {{sampler: integer, low: 0, high: 9}}
  y: {{llm: {{prompt: "Say {{{{ x }}}}"}}}}
""")
    t0 = time.monotonic()
    assert run("run", str(recipe), "--out", str(tmp_path / "run")).returncode == 0
    # 600 per minute is 10 per second, bursting to 10: 25 requests need at least 1.5 s.
    assert time.monotonic() - t0 >= 1.5
    assert srv.stats()["requests"] == 25


def test_long_prompts_are_trimmed_and_each_trim_logged(fake_server, tmp_path: Path) -> None:
    srv = fake_server()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
name: trim
size: 6
model: {{backend: openai, base_url: "{srv.base_url}", model: m, context_limit: 50}}
columns:
  n: {{sampler: integer, low: 1, high: 2}}
  y: {{llm: {{prompt: "{{% if n == 1 %}}{{{{ 'word ' * 400 }}}}{{% else %}}short{{% endif %}} end"}}}}
""")
    out = tmp_path / "run"
    res = run("run", str(recipe), "--out", str(out))
    assert res.returncode == 0, res.stderr
    recs = {orjson.loads(x)["sample_id"]: orjson.loads(x) for x in run("cat", str(out)).stdout.splitlines()}
    lines = attempts(out)
    long_slots = {int(s.split(":")[2]) for s, r in recs.items() if r["n"] == 1}
    assert long_slots
    trimmed = {a["slot"] for a in lines if a.get("trimmed_tokens")}
    assert trimmed == long_slots
    assert all(a["trimmed_tokens"] > 0 for a in lines if a["slot"] in trimmed)
    assert "llm trimmed prompts:" in res.stdout
    # The trimmed prompt kept its head and tail: the fake answer quotes the start of it.
    assert srv.stats()["prompt_tokens"] < 6 * 400


def test_report_telemetry_and_drift(fake_server, tmp_path: Path) -> None:
    srv = fake_server("--fault-rate", "0.2", "--seed", "4")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
name: tele
size: 60
model: {{backend: openai, base_url: "{srv.base_url}", model: gpt-4o-mini, concurrency: 8, timeout_s: 1}}
columns:
  x: {{sampler: integer, low: 0, high: 99}}
  y: {{llm: {{prompt: "Say {{{{ x }}}}", schema: {{type: object, properties: {{v: {{type: integer}}}}, required: [v]}}}}}}
""")
    out = tmp_path / "run"
    run("run", str(recipe), "--out", str(out))
    res = run("report", str(out), "--telemetry", "--json")
    assert res.returncode == 0
    text, _, js = res.stdout.partition("{\n")
    data = orjson.loads("{\n" + js)
    for key in ("items_per_s", "latency_ms", "counts", "repairs", "failure_reasons", "prompt_tokens",
                "completion_tokens", "cache_hits", "cost_usd", "drift"):  # fmt: skip
        assert key in data
    assert data["counts"]["retry"] > 0 and data["cost_usd"] > 0  # gpt-4o-mini is in the price table
    assert set(data["latency_ms"]) == {"p50", "p95", "p99"}
    assert "llm drift:" in text
    assert (out / "reports" / "telemetry.json").is_file()


def _row(i: int, status: str, latency: float, repairs: list[str]) -> dict:
    return {"ts": f"2026-01-01T00:00:{i % 60:02d}.000Z", "status": status, "latency_ms": latency, "repairs": repairs,
            "prompt_tokens": 10, "completion_tokens": 5, "pack": 1, "error": None}  # fmt: skip


def test_drift_flags_repair_growth_latency_and_success_drop() -> None:
    steady = [_row(i, "ok", 100.0, []) for i in range(100)]
    assert summarize(steady)["drift"]["flags"] == []
    worse = [_row(i, "ok", 100.0, []) for i in range(50)]
    worse += [_row(i, "repaired" if i % 2 else "failed", 400.0, ["strip_fences"]) for i in range(50, 100)]
    assert set(summarize(worse)["drift"]["flags"]) == {"repair_rate_growth", "latency_degradation", "success_rate_drop"}


def test_tiers_compare_by_the_drift_rules(tmp_path: Path) -> None:
    from datamill.llm.telemetry import compare_tiers

    base = [_row(i, "ok", 100.0, []) for i in range(100)]
    same = [_row(i, "ok", 110.0, []) for i in range(1000)]
    assert compare_tiers(base, same)["flags"] == []
    # The larger tier repairs a third of its answers and is slower: both flagged, against the base.
    worse = [_row(i, "repaired" if i % 3 == 0 else "ok", 200.0, ["strip_fences"]) for i in range(1000)]
    c = compare_tiers(base, worse)
    assert set(c["flags"]) == {"repair_rate_growth", "latency_degradation"}
    assert c["base"]["repair_rate"] == 0 and abs(c["tier"]["repair_rate"] - 334 / 1000) < 1e-9


def test_probe_context_embedded(tmp_path: Path) -> None:
    res = run("probe", "context", "--sizes", "256,512", "--json", str(tmp_path / "p.json"))
    assert res.returncode == 0, res.stderr
    data = orjson.loads((tmp_path / "p.json").read_bytes())
    assert data["largest_context"] == 512 and data["recommended_limit"] == 409
    assert data["memory_per_context_token_kb"] > 0
    assert all(r["ok"] and r["prompt_tokens"] > 0.8 * r["n_ctx"] for r in data["sizes"])


def test_probe_context_served(fake_server, tmp_path: Path) -> None:
    srv = fake_server("--max-context", "1500")
    res = run("probe", "context", "--base-url", srv.base_url, "--model", "m", "--json", str(tmp_path / "p.json"))
    assert res.returncode == 0, res.stderr
    data = orjson.loads((tmp_path / "p.json").read_bytes())
    # 256, 512, 1024 words pass; 2048 is refused.
    assert [r["ok"] for r in data["sizes"]] == [True, True, True, False]
    assert data["largest_context"] == 1024 and data["recommended_limit"] == 819
