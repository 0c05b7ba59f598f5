"""Issue 12: `datamill map` — an LLM over existing rows. Every row out, in order, with its input
columns; SIGKILL and resume exact; limits that hold run-wide; failed rows retried alone; an
estimate before spending; packing measured; progress from another shell.

Answers are checked against what the row says (the fake server's answer quotes the prompt it got),
not against datamill's own output."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from helpers import cli_env

PROMPT = "Score {{ text }} from 1 to 10"


def datamill(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = cli_env() | {"DATAMILL_API_KEY": "sk-test"}
    return subprocess.run([sys.executable, "-m", "datamill", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)  # fmt: skip


def write_rows(path: Path, n: int, start: int = 0) -> list[dict]:
    rows = [{"id": f"row-{i:05d}", "text": f"candidate {i} says {random.Random(i).randint(0, 99999)}", "group": i % 7}
            for i in range(start, start + n)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def map_args(src: Path, out: Path, base_url: str, *extra: str) -> list[str]:
    return ["map", str(src), "--prompt", PROMPT, "--column", "score", "--key", "id", "--out", str(out),
            "--model-base-url", base_url, "--model", "stub-model", "--api-key-env", "DATAMILL_API_KEY",
            "--progress", "none", *extra]  # fmt: skip


def records(out: Path) -> list[dict]:
    return [orjson.loads(x) for x in datamill("cat", str(out)).stdout.splitlines()]


def answers_row(answer: str, row: dict) -> bool:
    """The fake server's answer quotes the prompt it was given: this row's, not another's. (Its
    `invalid_json` fault cuts a text answer in half behind "Sure! Here is ": a text column cannot
    tell, and keeps it; the half it keeps must still be this row's.)"""
    quoted = f"Score {row['text']} from 1 to 10"
    if answer.startswith("Sure! Here is "):
        return quoted.startswith(answer.partition("about: ")[2])
    return answer.endswith("about: " + quoted)


def check_rows(out: Path, rows: list[dict]) -> list[dict]:
    got = records(out)
    assert len(got) == len(rows)
    for rec, row in zip(got, rows, strict=True):
        assert rec["sample_id"] == row["id"]
        assert {k: rec[k] for k in row} == row  # input columns unchanged, in order, one record per row
        assert list(rec) == ["sample_id", *row, "score"]
        assert answers_row(rec["score"], row), (rec, row)
    return got


def test_map_writes_every_row_with_its_answer_and_resumes_from_its_recipe(fake_server, tmp_path: Path) -> None:
    srv = fake_server()
    rows = write_rows(tmp_path / "in.jsonl", 450)
    out = tmp_path / "run"
    res = datamill(*map_args(tmp_path / "in.jsonl", out, srv.base_url, "--part-size", "100"))
    assert res.returncode == 0, res.stderr
    check_rows(out, rows)
    assert srv.stats()["requests"] == 450
    # The recipe it ran is kept: `run` on it resumes the same run (nothing left, nothing sent).
    assert (out / "map.yaml").is_file()
    res = datamill("run", str(out / "map.yaml"), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "0 parts run, 5 already committed" in res.stdout
    assert srv.stats()["requests"] == 450
    # Another map into the same dir is refused, and leaves the run's recipe as it was.
    kept = (out / "map.yaml").read_text()
    res = datamill(*map_args(tmp_path / "in.jsonl", out, srv.base_url, "--part-size", "100", "--max-tokens", "9"))
    assert res.returncode == 2 and "holds a run of recipe 'map'" in res.stderr
    assert (out / "map.yaml").read_text() == kept


def test_map_with_a_schema_file_writes_json_answers(fake_server, tmp_path: Path) -> None:
    rows = write_rows(tmp_path / "in.jsonl", 60)
    schema = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 10}},
              "required": ["score"]}  # fmt: skip
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    srv = fake_server()
    out = tmp_path / "run"
    res = datamill(*map_args(tmp_path / "in.jsonl", out, srv.base_url, "--schema", str(tmp_path / "schema.json")))
    assert res.returncode == 0, res.stderr
    got = records(out)
    assert [g["sample_id"] for g in got] == [r["id"] for r in rows]
    assert all(isinstance(g["score"], dict) and 1 <= g["score"]["score"] <= 10 for g in got)
    bad = datamill(
        *map_args(tmp_path / "in.jsonl", tmp_path / "x", srv.base_url, "--schema", str(tmp_path / "no.json"))
    )
    assert bad.returncode == 2 and "--schema: cannot read" in bad.stderr and not (tmp_path / "x").exists()


def test_map_sigkill_at_random_moments_resumes_exactly(fake_server, tmp_path: Path) -> None:
    rows = write_rows(tmp_path / "in.jsonl", 3000)
    clean_srv = fake_server("--latency-ms", "40")
    clean = tmp_path / "clean"
    assert datamill(*map_args(tmp_path / "in.jsonl", clean, clean_srv.base_url, "--part-size", "100")).returncode == 0
    srv = fake_server("--latency-ms", "40")
    out = tmp_path / "run"
    env = cli_env() | {"DATAMILL_API_KEY": "sk-test"}
    rng = random.Random(11)
    kills = 0
    concurrency = 16
    args = map_args(tmp_path / "in.jsonl", out, srv.base_url, "--part-size", "100", "--concurrency", str(concurrency),
                    "--workers", "2")  # fmt: skip
    while kills < 6:
        proc = subprocess.Popen([sys.executable, "-m", "datamill", *args], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        time.sleep(rng.uniform(0.8, 2.0))
        if proc.poll() is not None:
            break
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
    assert kills >= 5, f"the run finished after {kills} kills: make it longer"
    res = datamill(*args)
    assert res.returncode == 0, res.stderr
    assert datamill("cat", str(out)).stdout == datamill("cat", str(clean)).stdout  # identical to uninterrupted
    check_rows(out, rows)
    st = srv.stats()
    # An answered request is in the cache: only those in flight at a kill may be asked again.
    assert st["repeated_requests"] <= kills * concurrency, st
    assert st["requests"] <= len(rows) + kills * concurrency, st


def test_map_concurrency_and_rpm_hold_for_the_run_on_two_workers(fake_server, tmp_path: Path) -> None:
    write_rows(tmp_path / "in.jsonl", 320)
    srv = fake_server("--latency-ms", "100")
    res = datamill(*map_args(tmp_path / "in.jsonl", tmp_path / "c", srv.base_url, "--part-size", "40",
                             "--concurrency", "8", "--workers", "2"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    st = srv.stats()
    assert st["requests"] == 320 and st["max_in_flight"] <= 8, st  # not 8 per worker
    assert st["max_in_flight"] >= 6, st
    srv2 = fake_server()
    t0 = time.monotonic()
    res = datamill(*map_args(tmp_path / "in.jsonl", tmp_path / "r", srv2.base_url, "--part-size", "40",
                             "--rpm", "1200", "--workers", "2"))  # fmt: skip
    elapsed = time.monotonic() - t0
    assert res.returncode == 0, res.stderr
    lines = (tmp_path / "r" / "logs" / "attempts.jsonl").read_bytes().splitlines()
    stamps = sorted(dt.datetime.fromisoformat(orjson.loads(x)["ts"].replace("Z", "+00:00")).timestamp() for x in lines)
    first, last = stamps[0], stamps[-1]
    # 1200/min = 20/s after one second of burst (20): 320 requests span >= 15 s at the server.
    rate = (len(stamps) - 20) / (last - first)
    assert rate <= 20 * 1.10, (rate, elapsed)  # within 10% of the limit, run-wide
    assert rate >= 20 * 0.85, (rate, elapsed)  # and the limit is used


def test_retry_failed_map_asks_only_the_failed_rows(fake_server, tmp_path: Path) -> None:
    rows = write_rows(tmp_path / "in.jsonl", 400)
    faulty = fake_server("--fault-rate", "0.1", "--seed", "4")
    out = tmp_path / "run"
    # No retries: each injected fault (but 429s, always retried) fails its row.
    flags = ("--part-size", "50", "--workers", "2", "--max-retries", "0", "--timeout", "2")
    res = datamill(*map_args(tmp_path / "in.jsonl", out, faulty.base_url, *flags))
    assert res.returncode == 1, res.stderr
    first = records(out)
    failed = orjson.loads(datamill("status", str(out), "--json").stdout)["slots_failed"]
    assert 10 <= failed <= 60 and len(first) == 400 - failed
    healthy = fake_server()  # the server address is operational: the same run, resumed
    res = datamill(*map_args(tmp_path / "in.jsonl", out, healthy.base_url, *flags, "--retry-failed"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert healthy.stats()["requests"] == failed  # only the failed rows were requested again
    final = check_rows(out, rows)
    done = {r["sample_id"] for r in first}
    assert [r for r in final if r["sample_id"] in done] == first  # the rest is unchanged
    assert orjson.loads(datamill("status", str(out), "--json").stdout)["slots_failed"] == 0


def map_recipe(tmp_path: Path, base_url: str, llm: str = "", model: str = "") -> Path:
    path = tmp_path / "map.yaml"
    llm = llm or f'{{prompt: "{PROMPT}", max_tokens: 16}}'
    path.write_text(f"""
name: scores
source: {{path: in.jsonl, key: id}}
model: {{backend: openai, base_url: "{base_url}", model: stub-model, concurrency: 32, price_prompt_per_1k: 0.5,
         price_completion_per_1k: 1.5{model}}}
columns:
  score: {{llm: {llm}}}
""")
    return path


def test_estimate_prints_cost_and_time_before_any_request_and_counts_prompt_tokens(fake_server, tmp_path: Path) -> None:
    write_rows(tmp_path / "in.jsonl", 10_000)
    srv = fake_server()
    recipe = map_recipe(tmp_path, srv.base_url)
    res = datamill("estimate", str(recipe))
    assert res.returncode == 0, res.stderr
    assert srv.stats()["requests"] == 0  # nothing sent without --sample-calls
    assert "10,000 requests" in res.stdout and "cost at most $" in res.stdout and "time ~" in res.stdout
    est = orjson.loads(datamill("estimate", str(recipe), "--json").stdout)
    assert est["requests"] == 10_000 and est["cost_usd_max"] > 0 and est["seconds"] > 0
    assert srv.stats()["requests"] == 0
    # Sample calls measure the server's own count; they land in the run's cache and are reused.
    out = tmp_path / "run"
    est = orjson.loads(datamill("estimate", str(recipe), "--out", str(out), "--sample-calls", "20", "--json").stdout)
    assert srv.stats()["requests"] == 20
    res = datamill("run", str(recipe), "--out", str(out), "--workers", "1")
    assert res.returncode == 0, res.stderr
    st = srv.stats()
    assert st["requests"] == 10_000 and st["repeated_requests"] == 0  # the 20 were not sent again
    sent = st["prompt_tokens"]  # what the server counted, for every request of the run
    assert abs(est["prompt_tokens"] - sent) <= 0.02 * sent, (est["prompt_tokens"], sent)
    status = orjson.loads(datamill("status", str(out), "--json").stdout)
    assert status["estimate"]["prompt_tokens"] == est["prompt_tokens"]  # shown beside the actual
    assert status["llm"]["prompt_tokens"] == sent


def test_packing_sends_the_shared_system_prompt_once_per_pack_and_ties_answers_to_rows(
    fake_server, tmp_path: Path
) -> None:
    rows = write_rows(tmp_path / "in.jsonl", 400)
    system = " ".join(f"rule{i}: judge carefully and be brief." for i in range(170))  # ~1K tokens
    sent = {}
    for k in (1, 8):
        srv = fake_server()
        llm = f'{{prompt: "{PROMPT}", system: "{system}", max_tokens: 64, pack: {k}}}'
        recipe = map_recipe(tmp_path, srv.base_url, llm=llm)
        out = tmp_path / f"k{k}"
        res = datamill("run", str(recipe), "--out", str(out), "--workers", "1")
        assert res.returncode == 0, res.stderr
        for rec, row in zip(records(out), rows, strict=True):  # every answer is its own row's
            assert rec["sample_id"] == row["id"]
            assert answers_row(rec["score"], row), (k, rec, row)
        sent[k] = srv.stats()
    assert sent[1]["requests"] == 400 and sent[8]["requests"] == 50
    assert sent[8]["prompt_tokens"] < sent[1]["prompt_tokens"] / 5, (sent[8], sent[1])  # the system prompt once per 8


def test_status_of_a_running_map_from_another_shell(fake_server, tmp_path: Path) -> None:
    write_rows(tmp_path / "in.jsonl", 1200)
    srv = fake_server("--latency-ms", "100")
    out = tmp_path / "run"
    env = cli_env() | {"DATAMILL_API_KEY": "sk-test"}
    proc = subprocess.Popen([sys.executable, "-m", "datamill", *map_args(tmp_path / "in.jsonl", out, srv.base_url,
                             "--part-size", "100", "--concurrency", "16")], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        seen = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            if not (out / "manifest.json").exists():
                continue
            st = orjson.loads(datamill("status", str(out), "--json").stdout)
            if st["slots_done"] >= 300 and st["running_shards"]:
                seen = st
                break
        assert seen is not None, "no status seen while the map ran"
        assert seen["eta_s"] is not None and seen["eta_s"] > 0 and seen["slots_per_s"] > 0
        assert seen["llm"]["requests"] >= seen["slots_done"] and seen["llm"]["prompt_tokens"] > 0
        assert seen["llm"]["cost_usd"] == 0.0 or seen["llm"]["cost_usd"] > 0
        text = datamill("status", str(out)).stdout
        assert "llm " in text and "eta " in text
    finally:
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err


def test_map_with_the_embedded_model(tmp_path: Path) -> None:
    rows = write_rows(tmp_path / "in.jsonl", 4)
    out = tmp_path / "run"
    res = datamill("map", str(tmp_path / "in.jsonl"), "--prompt", "Reply with one word about: {{ text }}",
                   "--column", "word", "--key", "id", "--max-tokens", "6", "--out", str(out), "--progress", "none")  # fmt: skip
    assert res.returncode == 0, res.stderr
    got = records(out)
    assert [r["sample_id"] for r in got] == [r["id"] for r in rows]
    assert all({k: g[k] for k in row} == row and g["word"].strip() for g, row in zip(got, rows, strict=True))
