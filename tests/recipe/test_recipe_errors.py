"""Malformed recipes: each is refused with one line FILE:LINE:COL: field.path: message, exit 2,
and nothing written. The table is the spec; every row must be refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from datamill.cli import main

HEAD = "name: t\nseed: 1\nsize: 10\n"

# (id, recipe text, expected line, expected field path, words the message must contain)
CASES = [
    ("unknown-top-key", HEAD + "colums:\n  a: {sampler: integer, low: 1, high: 2}\n", 4, "colums", "unknown key"),
    (
        "unknown-column-key",
        HEAD + "columns:\n  a: {sampler: integer, low: 1, high: 2, hgih: 3}\n",
        5,
        "columns.a.hgih",
        "unknown key",
    ),
    ("size-not-int", "name: t\nsize: ten\ncolumns:\n  a: {expr: '1'}\n", 2, "size", "integer"),
    ("size-zero", "name: t\nsize: 0\ncolumns:\n  a: {expr: '1'}\n", 2, "size", "greater than or equal to 1"),
    (
        "seed-negative",
        "name: t\nseed: -4\nsize: 3\ncolumns:\n  a: {expr: '1'}\n",
        2,
        "seed",
        "greater than or equal to 0",
    ),
    ("missing-name", "size: 3\ncolumns:\n  a: {expr: '1'}\n", 1, "name", "required"),
    ("missing-columns", HEAD, 1, "columns", "required"),
    ("bad-name", "name: my recipe\nsize: 3\ncolumns:\n  a: {expr: '1'}\n", 1, "name", "pattern"),
    ("column-without-kind", HEAD + "columns:\n  a: {values: [1, 2]}\n", 5, "columns.a", "exactly one of"),
    (
        "unknown-sampler",
        HEAD + "columns:\n  a: {sampler: gaussian, low: 0, high: 1}\n",
        5,
        "columns.a",
        "exactly one of",
    ),
    ("two-kinds", HEAD + "columns:\n  a: {expr: '1', template: 'x'}\n", 5, "columns.a", "exactly one of"),
    (
        "integer-low-above-high",
        HEAD + "columns:\n  a: {sampler: integer, low: 5, high: 1}\n",
        5,
        "columns.a",
        "low <= high",
    ),
    (
        "integer-float-bound",
        HEAD + "columns:\n  a:\n    sampler: integer\n    low: 1.5\n    high: 4\n",
        7,
        "columns.a.low",
        "integer",
    ),
    (
        "weights-length",
        HEAD + "columns:\n  a: {sampler: categorical, values: [x, y], weights: [1]}\n",
        5,
        "columns.a",
        "2 weights",
    ),
    (
        "weights-negative",
        HEAD + "columns:\n  a:\n    sampler: categorical\n    values: {x: 1, y: -2}\n",
        5,
        "columns.a",
        ">= 0",
    ),
    (
        "expr-unknown-column",
        HEAD + "columns:\n  a: {sampler: integer, low: 1, high: 2}\n  b: {expr: 'a + c'}\n",
        6,
        "columns.b.expr",
        "unknown column 'c'",
    ),
    (
        "template-syntax",
        HEAD + "columns:\n  a: {sampler: integer, low: 1, high: 2}\n  b:\n    template: 'x {{ a '\n",
        7,
        "columns.b.template",
        "Jinja2",
    ),
    ("dag-cycle", HEAD + "columns:\n  a: {expr: 'b + 1'}\n  b: {expr: 'a + 1'}\n", 5, "columns.a", "cycle"),
    (
        "conditional-on-missing",
        HEAD + "columns:\n  a:\n    sampler: conditional\n    on: nope\n    table: {x: {y: 1}}\n",
        7,
        "columns.a.on",
        "unknown column 'nope'",
    ),
    (
        "conditional-missing-row",
        HEAD
        + "columns:\n  a: {sampler: categorical, values: [x, y]}\n  b:\n    sampler: conditional\n    on: a\n    table:\n      x: {p: 1}\n",
        9,
        "columns.b.table",
        "missing 'y'",
    ),
    (
        "generator-no-module",
        HEAD + "columns:\n  g: {generator: 'no_such_module_xyz:make'}\n",
        5,
        "columns.g.generator",
        "no module",
    ),
    (
        "generator-missing-file",
        HEAD + "columns:\n  g:\n    generator: ./gen_missing.py:make\n",
        6,
        "columns.g.generator",
        "no such file",
    ),
    (
        "generator-missing-function",
        HEAD + "columns:\n  g: {generator: 'datamill.recipes.lambda_traces:nope'}\n",
        5,
        "columns.g.generator",
        "no function 'nope'",
    ),
    ("generator-bad-spec", HEAD + "columns:\n  g: {generator: 'just_a_module'}\n", 5, "columns.g.generator", "pattern"),
    (
        "quota-not-categorical",
        HEAD + "columns:\n  a: {sampler: integer, low: 1, high: 2}\nquotas:\n  a: {1: 1}\n",
        7,
        "quotas.a",
        "categorical",
    ),
    (
        "quota-unknown-value",
        HEAD + "columns:\n  a: {sampler: categorical, values: [x, y]}\nquotas:\n  a:\n    x: 1\n    z: 2\n",
        9,
        "quotas.a.z",
        "not a value",
    ),
    (
        "cycles-length-mismatch",
        HEAD + "columns:\n  a: {expr: '1'}\ncycles:\n  p: [1, 2, 3]\n  q: [1, 2]\n",
        8,
        "cycles.q",
        "expected 3 values",
    ),
    ("output-format", HEAD + "columns:\n  a: {expr: '1'}\noutput:\n  format: csv\n", 7, "output.format", "jsonl"),
    (
        "output-part-size",
        HEAD + "columns:\n  a: {expr: '1'}\noutput: {part_size: 0}\n",
        6,
        "output.part_size",
        "greater than or equal to 1",
    ),
    ("reserved-column", HEAD + "columns:\n  sample_id: {expr: '1'}\n", 5, "columns.sample_id", "reserved"),
    ("bad-column-name", HEAD + "columns:\n  my-col: {expr: '1'}\n", 5, "columns.my-col", "column name"),
    ("invalid-yaml", HEAD + "columns:\n  a: {expr: '1'\n", 6, "", "invalid YAML"),
    ("duplicate-key", HEAD + "size: 4\ncolumns:\n  a: {expr: '1'}\n", 4, "", "invalid YAML"),
    ("not-a-mapping", "- name: t\n- size: 3\n", 1, "", "expected a mapping"),
    (
        "llm-unknown-column",
        HEAD + "columns:\n  a:\n    llm: {prompt: 'Say {{ b }}'}\n",
        6,
        "columns.a.llm.prompt",
        "unknown column 'b'",
    ),
    (
        "llm-bad-schema",
        HEAD + "columns:\n  a:\n    llm:\n      prompt: hi\n      schema: {type: 12}\n",
        8,
        "columns.a.llm.schema",
        "not a valid JSON schema",
    ),
    (
        "llm-bad-model-override",
        HEAD + "columns:\n  a:\n    llm:\n      prompt: hi\n      model: {backend: openai}\n",
        8,
        "columns.a.llm.model",
        "base_url",
    ),
    (
        "llm-pack-part-size",
        HEAD + "columns:\n  a: {llm: {prompt: hi, pack: 8}}\noutput: {part_size: 20}\n",
        6,
        "output.part_size",
        "multiple of",
    ),
    (
        "model-unknown-backend",
        HEAD + "model: {backend: vllm}\ncolumns:\n  a: {expr: '1'}\n",
        4,
        "model.backend",
        "embedded",
    ),
    (
        "cost-budget-without-prices",
        HEAD + "model: {backend: openai, base_url: 'http://127.0.0.1:1/v1', model: my-local, max_cost_usd: 5}\n"
        "columns:\n  a: {llm: {prompt: 'hi'}}\n",
        4,
        "model.max_cost_usd",
        "needs prices",
    ),
    (
        "content-gate-without-spans",
        HEAD + "columns:\n  a: {expr: '1'}\ngates:\n  - check: grounded\n    context: [a]\n",
        7,
        "gates[0]",
        "expected spans",
    ),
    (
        "content-gate-bad-pattern",
        HEAD + "columns:\n  a: {expr: '1'}\ngates:\n  - check: grounded\n    context: [a]\n"
        "    spans: {field: a, pattern: '(unclosed'}\n",
        9,
        "gates[0].spans.pattern",
        "regular expression",
    ),
    # Dashboard and safety gates (issue 15): options per kind, band order, data files that must load.
    (
        "dashboard-gate-without-field",
        HEAD + "columns:\n  a: {expr: '1'}\ngates:\n  - {dashboard: mattr, window: 50}\n",
        7,
        "gates[0]",
        "dashboard mattr: expected field:",
    ),
    (
        "dashboard-gate-bands-reversed",
        HEAD + "columns:\n  a: {expr: '1'}\ngates:\n  - {dashboard: opening_entropy, field: a, warn: 1, critical: 2}\n",
        7,
        "gates[0]",
        "higher is better, so expected critical (2) <= warn (1)",
    ),
    (
        "safety-fairness-missing-table",
        HEAD + "columns:\n  a: {expr: '1'}\ngates:\n  - {safety: fairness, attribute: a, table: census/none.csv}\n",
        7,
        "gates[0].table",
        "cannot read table",
    ),
    # A planner (issue 14): its prompt sees params, size, hints; its plan is the only quota.
    (
        "planner-unknown-name",
        HEAD + "planner: {prompt: 'plan {{ sise }} cases'}\ncolumns:\n  c: {expr: 'plan.name'}\n",
        4,
        "planner.prompt",
        "unknown name 'sise'",
    ),
    (
        "planner-with-quotas",
        HEAD + "planner: {prompt: 'plan {{ size }}'}\ncolumns:\n  c: {sampler: categorical, values: [a, b]}\n"
        "quotas:\n  c: {a: 1, b: 1}\n",
        7,
        "quotas",
        "gets its quotas from the plan",
    ),
    ("plan-without-planner", HEAD + "columns:\n  c: {expr: 'plan.name'}\n", 5, "columns.c.expr", "planner"),
    (
        "planner-bad-categories",
        HEAD + "planner: {prompt: x, max_categories: 0}\ncolumns:\n  c: {expr: '1'}\n",
        4,
        "planner.max_categories",
        "greater than or equal to 1",
    ),
    (
        "dedup-unknown-method",
        HEAD + "columns:\n  c: {expr: '1'}\ndedup: {method: [structural, fuzzy]}\n",
        6,
        "dedup.method",
        "structural",
    ),
]

LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<rest>.+)$")


@pytest.mark.parametrize(("text", "line", "path", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_recipe_is_refused_with_one_line(
    text: str, line: int, path: str, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    out = tmp_path / "out"
    code = main(["run", str(recipe), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    m = LINE.match(lines[0])
    assert m, lines[0]
    assert m["file"] == str(recipe)
    assert int(m["line"]) == line, lines[0]
    assert int(m["col"]) >= 1
    if path:
        assert m["rest"].startswith(path + ": "), lines[0]
    assert words in m["rest"], lines[0]
    assert not out.exists()


def test_there_are_at_least_twenty_cases() -> None:
    assert len(CASES) >= 20


def test_missing_recipe_file_is_one_line_exit_2(run_cli, tmp_path: Path) -> None:
    res = run_cli("run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "out"))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"{tmp_path / 'nope.yaml'}: no such recipe file"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "lambda-traces", "--out", "OUT", "--size", "0"],
        ["run", "lambda-traces", "--out", "OUT", "--workers", "zero"],
        ["run", "lambda-traces", "--out", "OUT", "--num-shards", "2", "--shard-index", "2"],
        ["run", "lambda-traces", "--out", "OUT", "--param", "nope=1"],
        ["run", "lambda-traces", "--out", "OUT", "--param", "novalue"],
        ["run", "no-such-builtin", "--out", "OUT"],
        ["run", "lambda-traces"],
        ["status", "OUT"],
        ["cat", "OUT"],
        ["merge", "OUT", "--out", "OUT/m.jsonl"],
    ],
    ids=[
        "size-0",
        "workers-word",
        "shard-index",
        "unknown-param",
        "param-form",
        "unknown-recipe",
        "no-out",
        "status-missing",
        "cat-missing",
        "merge-missing",
    ],
)
def test_bad_flags_are_refused_with_one_line(argv: list[str], run_cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = run_cli(*[a.replace("OUT", str(out)) for a in argv])
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert res.stderr.startswith("datamill: error:")
    assert not out.exists()
