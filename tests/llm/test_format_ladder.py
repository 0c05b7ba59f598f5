"""Issue 18: a server that refuses a response_format steps the run down the format ladder once,
whatever status it refuses with (400, 422, 500), while an honest 500 is retried, not stepped down."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jsonschema
import orjson
import pytest

from datamill.llm.backends.openai import refuses_format
from helpers import cli_env, llm_recipe

SCHEMA = {"type": "object", "properties": {"title": {"type": "string", "minLength": 3},
          "score": {"type": "integer", "minimum": 1, "maximum": 5}}, "required": ["title", "score"]}  # fmt: skip
COLUMN = "{llm: {prompt: 'Describe topic {{ topic }}', max_tokens: 64, schema: " + orjson.dumps(SCHEMA).decode() + "}}"
FMT = {"response_format": {"type": "json_schema"}}


@pytest.mark.parametrize(
    ("payload", "status", "body", "refused"),
    [
        (FMT, 500, "[{'type': 'literal_error', 'loc': ('body', 'response_format', 'type')}]", True),
        (FMT, 422, '{"detail":[{"loc":["body","response_format","type"]}]}', True),
        (FMT, 400, "json_schema is not supported", True),
        (FMT, 500, "internal error: worker crashed", False),  # honest 500: retry
        (FMT, 500, "schema cache corrupted", False),  # a 500 must name response_format itself
        ({}, 500, "response_format", False),  # the request carried no format
        (FMT, 404, "response_format", False),
        (FMT, 400, "context length exceeded", False),
    ],
)
def test_a_refusal_is_recognised_by_what_it_names_not_by_its_status(
    payload: dict, status: int, body: str, refused: bool
) -> None:
    assert refuses_format(payload, status, body) is refused


def _run(
    tmp_path: Path, base_url: str, size: int, model: dict | None = None
) -> tuple[subprocess.CompletedProcess, Path]:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(llm_recipe(base_url, size=size, column=COLUMN, model=model, part_size=size))
    out = tmp_path / "run"
    env = cli_env() | {"DATAMILL_API_KEY": "sk-test"}
    res = subprocess.run(
        [sys.executable, "-m", "datamill", "run", str(recipe), "--out", str(out), "--workers", "1"],
        capture_output=True, text=True, env=env, timeout=240,
    )  # fmt: skip
    return res, out


@pytest.mark.parametrize("status", ["500", "422"])
def test_a_refused_json_schema_steps_down_once_and_every_slot_succeeds(
    run_cli, fake_server, tmp_path: Path, status: str
) -> None:
    srv = fake_server("--reject-format", "json_schema", "--reject-status", status)
    res, out = _run(tmp_path, srv.base_url, size=12)
    assert res.returncode == 0, res.stdout + res.stderr
    recs = [orjson.loads(x) for x in run_cli("cat", str(out)).stdout.splitlines()]
    assert len(recs) == 12
    for r in recs:
        jsonschema.validate(r["answer"], SCHEMA)
    telemetry = orjson.loads((out / "reports" / "telemetry.json").read_bytes())
    steps = telemetry["format_step_downs"]
    assert [(s["from"], s["to"]) for s in steps] == [("json_schema", "json_object_schema")]
    assert telemetry["counts"]["failed"] == 0
    assert "refused response_format json_schema" in res.stdout
    # Every slot that was refused was asked again at the lower rung; no slot was refused twice.
    assert srv.stats()["statuses"]["rejected_format"] <= 12
    assert srv.stats()["statuses"]["ok"] == 12


def test_an_honest_500_is_retried_not_stepped_down(run_cli, fake_server, tmp_path: Path) -> None:
    srv = fake_server("--reject-format", "json_schema", "--reject-status", "500", "--reject-body", "worker crashed")
    res, out = _run(tmp_path, srv.base_url, size=4, model={"max_retries": 1})
    assert res.returncode == 1, res.stdout + res.stderr
    telemetry = orjson.loads((out / "reports" / "telemetry.json").read_bytes())
    assert telemetry["format_step_downs"] == []
    assert telemetry["failure_reasons"] == {"server_error": 8}
    assert srv.stats()["requests"] == 8  # each slot: the first try and one retry, all at json_schema
    events = [orjson.loads(x) for x in (out / "logs" / "run.jsonl").read_bytes().splitlines()]
    assert sum(e["event"] == "slot_failed" and "server_error" in e["reason"] for e in events) == 4
