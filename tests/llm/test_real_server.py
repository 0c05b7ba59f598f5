"""Issue 18: compatibility is proven against a real server, not our fake: llama-cpp-python's own
OpenAI-compatible server (its ``server`` extra) on loopback, serving the shipped SmolLM2 GGUF."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import orjson
import pytest

from datamill.llm.backends.embedded import default_model_path
from helpers import cli_env

CARD = {"type": "object", "properties": {"name": {"type": "string"}, "legs": {"type": "integer"}},
        "required": ["name", "legs"]}  # fmt: skip
SCORE = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5}},
         "required": ["score"]}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server] (the dev extra)")
    port = _free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(default_model_path()),
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(base + "/models", timeout=5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("llama-cpp-python's server did not start:\n" + log.read_text()[-2000:]) from None
                time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _model_block(base_url: str, **extra: object) -> str:
    return orjson.dumps({"backend": "openai", "base_url": base_url, "model": "smollm2", "timeout_s": 120,
                         "max_retries": 2, **extra}).decode()  # fmt: skip


def _run(tmp_path: Path, text: str) -> tuple[subprocess.CompletedProcess, Path, list[dict]]:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "datamill"]
    res = subprocess.run([*argv, "run", str(recipe), "--out", str(out), "--workers", "1"],
                         capture_output=True, text=True, env=cli_env(), timeout=600)  # fmt: skip
    cat = subprocess.run([*argv, "cat", str(out)], capture_output=True, text=True, env=cli_env(), timeout=60)
    return res, out, [orjson.loads(x) for x in cat.stdout.splitlines()]


def _telemetry(out: Path) -> dict:
    return dict(orjson.loads((out / "reports" / "telemetry.json").read_bytes()))


def test_plain_and_schema_columns_run_on_the_real_llama_cpp_server(llama_server: str, tmp_path: Path) -> None:
    # The recipe as a user writes it: no server-specific settings.
    text = f"""
name: real-server
seed: 11
size: 4
model: {_model_block(llama_server)}
columns:
  animal: {{sampler: categorical, values: [cat, dog, owl, fox]}}
  line: {{llm: {{prompt: "Say hello to a {{{{ animal }}}} in five words.", max_tokens: 24, temperature: 0.2}}}}
  card: {{llm: {{prompt: "Describe a {{{{ animal }}}}: its name and how many legs it has.", max_tokens: 96,
          temperature: 0.2, schema: {orjson.dumps(CARD).decode()}}}}}
output: {{part_size: 4}}
"""
    res, out, recs = _run(tmp_path, text)
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(recs) == 4
    for r in recs:
        assert isinstance(r["line"], str) and r["line"].strip()
        jsonschema.validate(r["card"], CARD)
    # The server answers json_schema with a 500 naming response_format: one step down, recorded once.
    steps = _telemetry(out)["format_step_downs"]
    assert [(s["from"], s["to"]) for s in steps] == [("json_schema", "json_object_schema")]


def test_packed_and_judge_columns_run_on_the_real_llama_cpp_server(llama_server: str, tmp_path: Path) -> None:
    text = f"""
name: real-server-judge
seed: 12
size: 4
# repeat_penalty 1.0: this server's default penalty (1.1) lets tokens past its JSON grammar
# (docs/llm.md, compatibility); extra_body is how a recipe sends a server's own settings.
model: {_model_block(llama_server, extra_body={"repeat_penalty": 1.0})}
columns:
  animal: {{sampler: categorical, values: [cat, dog, owl, fox]}}
  fact: {{llm: {{system: "You answer in one short sentence.", prompt: "A fact about the {{{{ animal }}}}.",
          max_tokens: 48, temperature: 0.2, pack: 2}}}}
  judge: {{llm: {{prompt: "Rate from 1 to 5 how true this is of a {{{{ animal }}}}: {{{{ fact }}}}", max_tokens: 32,
           temperature: 0.0, schema: {orjson.dumps(SCORE).decode()}}}}}
output: {{part_size: 2}}
"""
    res, out, recs = _run(tmp_path, text)
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(recs) == 4
    for r in recs:
        assert isinstance(r["fact"], str) and r["fact"].strip()
        jsonschema.validate(r["judge"], SCORE)
    attempts = [orjson.loads(x) for x in (out / "logs" / "attempts.jsonl").read_bytes().splitlines()]
    assert any(a.get("pack") == 2 for a in attempts), "the packed column sent packed requests"
    assert len(_telemetry(out)["format_step_downs"]) == 1


def test_probe_server_reports_what_the_real_server_accepts(llama_server: str, tmp_path: Path) -> None:
    report = tmp_path / "probe.json"
    res = subprocess.run(
        [sys.executable, "-m", "datamill", "probe", "server", "--base-url", llama_server, "--model", "smollm2",
         "--json", str(report)],
        capture_output=True, text=True, env=cli_env(), timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    r = orjson.loads(report.read_bytes())
    caps = r["capabilities"]
    assert caps["chat"]["ok"] and caps["json_object_schema"]["ok"] and caps["json_object"]["ok"]
    assert not caps["json_schema"]["ok"] and "response_format" in caps["json_schema"]["error"]
    assert not caps["list_content"]["ok"]
    assert caps["seed"]["ok"]
    assert r["ladder_uses"] == "json_object_schema"
    assert "will use: json_object_schema" in res.stdout
