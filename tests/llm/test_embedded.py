"""The embedded default (SmolLM2-135M on llama-cpp-python, shipped in a PyPI package): no
server, no key, no download. A real model, no mock."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import orjson

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "legs": {"type": "integer"}},
    "required": ["name", "legs"],
}

RECIPE = f"""
name: emb
seed: 3
size: 4
columns:
  animal: {{sampler: categorical, values: [cat, dog, owl, fox]}}
  card:
    llm:
      prompt: "Describe a {{{{ animal }}}} in a few words."
      max_tokens: 48
      temperature: 0.2
      schema: {orjson.dumps(SCHEMA).decode()}
  line:
    llm: {{prompt: "Say hello to a {{{{ animal }}}}.", max_tokens: 12}}
output: {{part_size: 4}}
"""


def test_embedded_model_writes_records_that_validate(run_cli, tmp_path: Path) -> None:
    recipe = tmp_path / "emb.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "run"
    res = run_cli("run", str(recipe), "--out", str(out), "--workers", "1")
    assert res.returncode == 0, res.stdout + res.stderr
    recs = [orjson.loads(x) for x in run_cli("cat", str(out)).stdout.splitlines()]
    assert len(recs) == 4
    for r in recs:
        jsonschema.validate(r["card"], SCHEMA)
        assert isinstance(r["line"], str) and r["line"].strip()
    attempts = [orjson.loads(x) for x in (out / "logs" / "attempts.jsonl").read_bytes().splitlines()]
    assert {a["backend"] for a in attempts} == {"embedded"}
    assert all(a["completion_tokens"] > 0 for a in attempts if a["status"] in ("ok", "repaired"))
    # A second run over the same dir replays the cache: nothing new is generated.
    for p in (out / "parts").iterdir():
        p.unlink()
    again = run_cli("run", str(recipe), "--out", str(out), "--workers", "1")
    assert again.returncode == 0
    assert [orjson.loads(x) for x in run_cli("cat", str(out)).stdout.splitlines()] == recs
    assert "8 from cache" in again.stdout
