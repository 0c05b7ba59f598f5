"""Issue 11: every CLI verb's behaviour is reachable from Python with the same result (both run on
the same recipe; outputs compared byte for byte), read(...).to_hf() round-trips values and types,
recipes built in Python are validated like YAML, and the layers point one way."""

from __future__ import annotations

import ast
import io
import shutil
from pathlib import Path

import orjson
import pytest

import datamill

SRC = Path(datamill.__file__).resolve().parent
RECIPE = """
name: api-parity
seed: 9
size: 60
params: {word: hi}
columns:
  topic: {sampler: categorical, values: {math: 2, art: 1, law: 1}}
  n: {sampler: integer, low: 1, high: 4}
  line: {template: "{{ params.word }} {{ topic }} {{ n }}"}
  dup: {template: "{{ topic }}"}
quotas:
  topic: {math: 0.5, art: 0.25, law: 0.25}
output: {part_size: 20}
"""


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(RECIPE)
    return p


def _cli(run_cli, *args: str) -> bytes:
    res = run_cli(*args)
    assert res.returncode in (0, 1), res.stderr
    return res.stdout.encode()


def test_run_cat_merge_status_fsck_match_the_cli(run_cli, recipe: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "cli", tmp_path / "py"
    assert run_cli("run", str(recipe), "--out", str(a), "--workers", "2").returncode == 0
    result = datamill.run(str(recipe), b, workers=2, progress=False)
    assert result.exit_code == 0 and result.summary.records == 60
    # cat: the same bytes
    buf = io.BytesIO()
    datamill.cat(b, buf)
    assert buf.getvalue() == _cli(run_cli, "cat", str(a))
    assert [p.read_bytes() for p in sorted((a / "parts").glob("*.jsonl"))] == [
        p.read_bytes() for p in sorted((b / "parts").glob("*.jsonl"))
    ]
    # merge
    assert run_cli("merge", str(a), "--out", str(tmp_path / "cli.jsonl")).returncode == 0
    datamill.merge([b], tmp_path / "py.jsonl")
    assert (tmp_path / "cli.jsonl").read_bytes() == (tmp_path / "py.jsonl").read_bytes()
    # status
    cli_status = orjson.loads(run_cli("status", str(a), "--json").stdout)
    py_status = datamill.status(b).as_dict()
    for key in ("slots_done", "slots_failed", "slots_remaining", "records", "parts", "missing", "damaged"):
        assert cli_status[key] == py_status[key], key
    # fsck, on the same damage
    for d in (a, b):
        part = sorted((d / "parts").glob("*.jsonl"))[1]
        part.write_bytes(part.read_bytes()[:100])
    res = run_cli("fsck", str(a))
    report = datamill.fsck(b)
    assert res.returncode == 1 and not report.clean
    assert [r.replace(str(b), "D") for _, r in report.damaged] == [
        x.replace(str(a), "D") for x in res.stdout.splitlines() if ": damaged:" in x
    ]


def test_plan_verify_dedup_golden_match_the_cli(run_cli, recipe: Path, tmp_path: Path) -> None:
    out = run_cli("plan", str(recipe), "--num-shards", "3").stdout
    info = datamill.plan(datamill.load_recipe(recipe), num_shards=3)
    for s in info.shards:
        assert f"slots [{s['start']:,}, {s['end']:,})" in out
    assert f"hash        {info.recipe.hash}" in out

    base = tmp_path / "base"
    datamill.run(str(recipe), base, workers=1, progress=False)
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(base, a)
    shutil.copytree(base, b)

    run_cli("verify", str(a), "--no-tokens", "--report", str(tmp_path / "cli.json"))
    datamill.verify(b, count_tokens=False, report=tmp_path / "py.json")
    cli_doc, py_doc = (orjson.loads((tmp_path / f).read_bytes()) for f in ("cli.json", "py.json"))
    for doc in (cli_doc, py_doc):
        doc["header"].pop("source"), doc["header"].pop("created", None), doc["summary"].pop("time_per_100_items")
        doc["summary"]["metrics"].pop("time_per_100_items", None)
    assert cli_doc == py_doc

    res = run_cli("dedup", str(a), "--method", "exact", "--field", "dup")
    py = datamill.dedup(b, method="exact", fields=["dup"])
    assert res.returncode == (0 if not py.left_rejected else 1)
    assert _cli(run_cli, "cat", str(a)) == _cli(run_cli, "cat", str(b))
    doc = orjson.loads((a / "reports" / "dedup.json").read_bytes())
    assert doc.pop("recipe_hash") == datamill.status(a).summary.recipe_hash and doc.pop("auto") is False
    assert doc == py.as_dict()

    assert run_cli("golden", "create", str(recipe), "--stratify", "topic", "--size", "12",
                   "--out", str(tmp_path / "g-cli.json")).returncode == 0  # fmt: skip
    datamill.golden_create(recipe, 12, ["topic"], tmp_path / "g-py.json")
    assert (tmp_path / "g-cli.json").read_bytes() == (tmp_path / "g-py.json").read_bytes()


def test_to_hf_round_trips_values_and_types(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "lt"
    datamill.run(datamill.load_recipe("lambda-traces", size=40), out, workers=1, progress=False)
    records = datamill.read(out).to_list()
    hf = datamill.read(out).to_hf()
    assert isinstance(hf, datasets.Dataset) and len(hf) == len(records)
    assert hf.to_list() == records  # same values, nested dicts and lists included
    for rec, row in zip(records, hf, strict=True):
        for key, value in rec.items():
            assert type(row[key]) is type(value), key  # ints stay ints, None stays None
    assert set(hf.column_names) == set(records[0])


def test_recipes_built_in_python_are_validated_like_yaml(tmp_path: Path) -> None:
    from datamill.recipe.model import Recipe as Model

    text = datamill.load_recipe(RECIPE)
    as_dict = datamill.load_recipe(orjson.loads(orjson.dumps(text.model.model_dump(mode="json", by_alias=True))))
    as_model = datamill.load_recipe(Model.model_validate(text.model.model_dump(by_alias=True)))
    assert text.hash == as_dict.hash == as_model.hash
    with pytest.raises(datamill.RecipeError) as err:
        datamill.load_recipe({"name": "x", "size": 3, "columns": {"a": {"template": "{{ nope }}"}}})
    assert str(err.value).startswith("<dict>:") and "columns.a.template: unknown column 'nope'" in str(err.value)
    # A run from a dict resumes like a run from a file (the manifest holds the recipe text).
    d = {"name": "d", "seed": 1, "size": 8, "columns": {"n": {"sampler": "integer", "low": 1, "high": 9}}}
    first = datamill.run(d, tmp_path / "d", workers=1, progress=False)
    again = datamill.run(d, tmp_path / "d", workers=1, progress=False)
    assert first.summary.records == 8 and again.summary.parts_run == 0


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if n == "datamill" or n.startswith("datamill.")}


# layer -> datamill packages it may not import (DESIGN.md: imports point downward only)
FORBIDDEN = {
    "engine": ("datamill.quality", "datamill.api", "datamill.cli", "datamill.recipes"),
    "store": (
        "datamill.engine",
        "datamill.quality",
        "datamill.llm",
        "datamill.columns",
        "datamill.api",
        "datamill.cli",
    ),
    "recipe": ("datamill.engine", "datamill.quality", "datamill.columns", "datamill.api", "datamill.cli"),
    "columns": ("datamill.engine", "datamill.quality", "datamill.api", "datamill.cli"),
    "llm": ("datamill.engine", "datamill.quality", "datamill.api", "datamill.cli"),
    "quality": ("datamill.api", "datamill.cli"),
}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_point_one_way(layer: str) -> None:
    bad = []
    for path in sorted((SRC / layer).rglob("*.py")):
        for name in _imports(path):
            if name.startswith(FORBIDDEN[layer]):
                bad.append(f"{path.relative_to(SRC)} imports {name}")
    assert bad == []


def test_the_cli_goes_through_the_api() -> None:
    allowed = ("datamill.api", "datamill.errors", "datamill.progress", "datamill.cli", "datamill.bench")
    bad = []
    for path in sorted((SRC / "cli").glob("*.py")):
        for name in _imports(path):
            if name not in ("datamill", "datamill.__version__", "datamill.api") and not name.startswith(allowed):
                bad.append(f"cli/{path.name} imports {name}")
    assert bad == []


def test_every_verb_help_shows_an_example(run_cli) -> None:
    from datamill.cli.main import build_parser

    parser = build_parser()
    verbs = []
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for name, sub in action.choices.items():
            nested = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
            if nested:
                verbs += [(f"{name} {n}", s) for n, s in nested[0].choices.items()]
            else:
                verbs.append((name, sub))
    assert len(verbs) >= 20
    missing = [name for name, sub in verbs if "example" not in (sub.epilog or "")]
    assert missing == []
