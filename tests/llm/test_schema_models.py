"""A pydantic model as an LLM column's schema (`schema: module:Model`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from helpers import cli_env

MODELS = """
from pydantic import BaseModel, Field

class Card(BaseModel):
    title: str = Field(min_length=3)
    stars: int = Field(ge=1, le=5)
"""


def test_pydantic_model_schema_validates_records(fake_server, tmp_path: Path) -> None:
    srv = fake_server()
    (tmp_path / "models.py").write_text(MODELS)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
name: cards
size: 20
model: {{backend: openai, base_url: "{srv.base_url}", model: m}}
columns:
  topic: {{sampler: categorical, values: [tea, rain, bikes]}}
  card: {{llm: {{prompt: "A card about {{{{ topic }}}}", schema: "./models.py:Card"}}}}
""")
    out = tmp_path / "run"
    env = cli_env()
    res = subprocess.run([sys.executable, "-m", "datamill", "run", str(recipe), "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    cat = subprocess.run([sys.executable, "-m", "datamill", "cat", str(out)], capture_output=True, text=True, env=env)
    sys.path.insert(0, str(tmp_path))
    try:
        from models import Card  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    recs = [orjson.loads(x) for x in cat.stdout.splitlines()]
    assert len(recs) == 20
    for r in recs:
        Card.model_validate(r["card"])
