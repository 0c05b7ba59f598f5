"""Issue 14, item 4: `judge` and `validate` columns, and the gates that bound them.

Validators are checked against planted inputs whose validity the test declares (hand-written
valid code and queries; invalid ones of several kinds), through real runs over a JSONL source.
Judges run on the real embedded model, on the fake OpenAI-compatible server (packing, run-wide
limits), and on a scripted server whose scores follow the test's own rule (so the gates' means
are known without reading datamill's numbers).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import datamill
from datamill.cli import main
from helpers import ScriptedServer, cli_env

PYTHON_VALID = [
    "def add(a, b):\n    return a + b\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n"
    "        self.items.append(x)\n        return self\n",
    # An invalid escape warns at compile time; the code is still valid Python.
    "import re\n\n\ndef digits(s):\n    return re.findall('\\d+', s)\n",
    "async def main(lock):\n    async with lock:\n        await asyncio.sleep(1)\n",
    "squares = {x: x * x for x in range(10) if x % 2}\n",
]
PYTHON_INVALID = [
    "def f(x)\n    return x\n",  # missing colon
    "total = sum([1, 2, 3)\n",  # mismatched bracket
    "print((1, 2)\n",  # unclosed bracket
    "def f():\nreturn 1\n",  # body not indented
    "if ready:\n    a = 1\n      b = 2\n",  # unexpected indent
    "x = = 2\n",  # syntax error
]
SQL_VALID = [
    "SELECT * FROM users",
    "SELECT c.name, COUNT(o.id) AS n FROM customers c LEFT JOIN orders o ON o.customer_id = c.id "
    "WHERE c.active = TRUE GROUP BY c.name HAVING COUNT(o.id) > 2 ORDER BY n DESC LIMIT 10",
    "WITH recent AS (SELECT * FROM orders WHERE created_at > '2024-01-01') "
    "SELECT customer_id, SUM(total) FROM recent GROUP BY customer_id",
    "INSERT INTO orders (id, customer_id, total) VALUES (1, 42, 19.99)",
    "UPDATE orders SET status = 'shipped' WHERE id = 7",
    "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, email TEXT)",
    "DELETE FROM sessions WHERE expires_at < CURRENT_TIMESTAMP",
]
SQL_INVALID = [
    "SELEC * FROM t",  # misspelt keyword
    "INSRT INTO t VALUES (1)",  # misspelt keyword
    "SELECT * FROM WHERE x = 1",  # missing table
    "SELECT (a + b FROM t",  # unbalanced parens
    "SELECT * FROM t WHERE id IN (1, 2",  # unbalanced parens
    "SELECT a FROM t WHERE x = 1)",  # unbalanced parens
    "SELECT * FROM t garbage garbage",  # trailing garbage
    "SELECT * FROM users; garbage",  # a second "statement" that is a bare word
    "SELECT * FROM users WHERE name = 'bob",  # unterminated string
    "SHOW ME THE MONEY",  # parsed only as an opaque command
    "UPDATE t SET",  # nothing set
    "SELECT a,, b FROM t",  # empty list item
    "SELECT",  # no column list
    "",  # no statement
]
JSON_VALID = ['{"a": [1, 2, {"b": null}]}', "[]", '"text"']
JSON_INVALID = ['{"a": 1', "{'a': 1}", '{"a": 1,}', "NaN-ish"]
SLUG_VALID = ["order-status", "refunds"]
SLUG_INVALID = ["Order Status", "refunds!", ""]


def _rows() -> list[dict]:
    rows = []
    for kind, valid, texts in [
        ("python", True, PYTHON_VALID), ("python", False, PYTHON_INVALID),
        ("sql", True, SQL_VALID), ("sql", False, SQL_INVALID),
        ("json", True, JSON_VALID), ("json", False, JSON_INVALID),
        ("slug", True, SLUG_VALID), ("slug", False, SLUG_INVALID),
    ]:  # fmt: skip
        for i, text in enumerate(texts):
            rows.append({"id": f"{kind}-{'ok' if valid else 'bad'}-{i}", "kind": kind, "text": text, "valid": valid,
                         "meta": {"lang": kind}})  # fmt: skip
    rows.append({"id": "json-number", "kind": "json", "text": 42, "valid": False, "meta": {"lang": "json"}})
    rows.append({"id": "sql-backticks", "kind": "mysql", "text": "SELECT `name` FROM users", "valid": True,
                 "meta": {"lang": "sql"}})  # fmt: skip
    return rows


VALIDATE_RECIPE = """
name: validators
source: {path: rows.jsonl, key: id}
columns:
  python_ok: {validate: python, field: text}
  sql_ok: {validate: sql, field: text}
  json_ok: {validate: json, field: text}
  slug_ok: {validate: "regex:[a-z]+(-[a-z]+)*", field: text}
  mysql_ok: {validate: sql, field: text, dialect: mysql}
  postgres_ok: {validate: sql, field: text, dialect: postgres}
  lang_ok: {validate: "regex:python|sql|json|slug", field: meta.lang}
output: {part_size: 16}
"""


def test_validators_flag_planted_invalid_inputs_and_pass_valid_ones(tmp_path: Path) -> None:
    rows = _rows()
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "r.yaml").write_text(VALIDATE_RECIPE)
    result = datamill.run(str(tmp_path / "r.yaml"), tmp_path / "out", workers=1, progress=False)
    assert result.exit_code == 0 and result.summary.slots_failed == 0
    records = datamill.read(tmp_path / "out").to_list()
    assert [r["id"] for r in records] == [r["id"] for r in rows]
    for row, rec in zip(rows, records, strict=True):
        for key, value in row.items():
            assert rec[key] == value  # the input columns, unchanged
        column = {"mysql": "mysql_ok"}.get(row["kind"], f"{row['kind']}_ok")
        verdict = rec[column]
        assert set(verdict) == {"ok", "error"}, verdict
        assert verdict["ok"] is row["valid"], (row["text"], verdict)
        if row["valid"]:
            assert verdict["error"] is None
        else:
            assert isinstance(verdict["error"], str) and verdict["error"], (row["text"], verdict)
        assert rec["lang_ok"] == {"ok": True, "error": None}  # a key of a dict-valued column
    by_id = {r["id"]: r for r in records}
    # Python errors say where: `line L: message`.
    assert by_id["python-bad-0"]["python_ok"]["error"].startswith("line 1:")
    assert by_id["python-bad-3"]["python_ok"]["error"].startswith("line 2:")
    assert "indent" in by_id["python-bad-4"]["python_ok"]["error"]
    assert "never closed" in by_id["python-bad-2"]["python_ok"]["error"]
    # A value that is not a string is invalid, with the reason.
    assert by_id["json-number"]["json_ok"] == {"ok": False, "error": "expected a string in field 'text', got int"}
    # The dialect matters: MySQL quotes names with backticks, PostgreSQL does not.
    assert by_id["sql-backticks"]["mysql_ok"]["ok"] is True
    assert by_id["sql-backticks"]["postgres_ok"]["ok"] is False
    assert by_id["sql-ok-3"]["postgres_ok"]["ok"] is True
    # Deterministic: a second run writes the same bytes.
    datamill.run(str(tmp_path / "r.yaml"), tmp_path / "again", workers=2, progress=False)
    assert list(datamill.read(tmp_path / "again").lines()) == list(datamill.read(tmp_path / "out").lines())


HEAD = "name: t\nseed: 1\nsize: 8\n"
BASE = "columns:\n  code: {sampler: categorical, values: ['x = 1', 'y =']}\n"
LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<rest>.+)$")

# (id, recipe text, expected line, expected field path, words the message must contain)
ERRORS = [
    ("validate-unknown-field", HEAD + BASE + "  ok:\n    validate: python\n    field: cod\n", 8, "columns.ok.field",
     "unknown field 'cod'"),
    ("validate-bad-regex", HEAD + BASE + "  ok:\n    validate: 'regex:(unclosed'\n    field: code\n", 7,
     "columns.ok.validate", "regular expression"),
    ("validate-unknown-kind", HEAD + BASE + "  ok: {validate: yaml, field: code}\n", 6, "columns.ok.validate",
     "json, python, sql or regex"),
    ("validate-unknown-dialect", HEAD + BASE + "  ok:\n    validate: sql\n    field: code\n    dialect: oracle9\n", 9,
     "columns.ok.dialect", "Unknown dialect"),
    ("validate-dialect-not-sql", HEAD + BASE + "  ok: {validate: python, field: code, dialect: mysql}\n", 6,
     "columns.ok.dialect", "only validate: sql"),
    ("validate-itself", HEAD + BASE + "  ok: {validate: json, field: ok}\n", 6, "columns.ok.field", "itself"),
    ("validate-without-field", HEAD + BASE + "  ok: {validate: json}\n", 6, "columns.ok.field", "required"),
    ("judge-unknown-field", HEAD + BASE + "  j:\n    judge:\n      rubric: good?\n      fields: [code, answr]\n", 9,
     "columns.j.judge.fields[1]", "unknown field 'answr'"),
    ("judge-bad-scale", HEAD + BASE + "  j:\n    judge:\n      rubric: good?\n      scale: [5, 1]\n", 9,
     "columns.j.judge.scale", "lowest < highest"),
    ("judge-unknown-key", HEAD + BASE + "  j:\n    judge:\n      rubric: good?\n      rubrik: x\n", 9,
     "columns.j.judge.rubrik", "unknown key"),
    ("judge-no-rubric", HEAD + BASE + "  j:\n    judge: {scale: [1, 3]}\n", 7, "columns.j.judge.rubric", "required"),
    ("judge-nothing-to-judge", HEAD + "columns:\n  j:\n    judge: {rubric: good?}\n", 6, "columns.j.judge",
     "nothing to judge"),
    ("judge-bad-model", HEAD + BASE + "  j:\n    judge:\n      rubric: good?\n      model: {backend: openai}\n", 9,
     "columns.j.judge.model", "base_url"),
    ("judge-pack-part-size", HEAD + BASE + "  j: {judge: {rubric: good?, pack: 3}}\noutput: {part_size: 8}\n", 7,
     "output.part_size", "columns.j.judge.pack"),
    ("judge-and-llm", HEAD + BASE + "  j: {judge: {rubric: good?}, llm: {prompt: hi}}\n", 6, "columns.j",
     "exactly one of"),
    ("gate-shorthand-without-column", HEAD + BASE + "gates:\n  - {min_mean_score: 3}\n", 7, "gates[0]",
     "expected column"),
    ("gate-shorthand-both", HEAD + BASE + "gates:\n  - {column: j, min_mean_score: 3, max_invalid_rate: 0.1}\n", 7,
     "gates[0]", "exactly one of"),
    ("gate-shorthand-and-max", HEAD + BASE + "gates:\n  - {column: ok, max_invalid_rate: 0.1, max: 0.2}\n", 7,
     "gates[0]", "give no metric, min or max"),
    ("gate-rate-above-one", HEAD + BASE + "gates:\n  - {column: ok, max_invalid_rate: 5}\n", 7,
     "gates[0].max_invalid_rate", "less than or equal to 1"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "path", "words"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_malformed_judge_and_validate_columns_are_refused_with_the_line(
    text: str, line: int, path: str, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    out = tmp_path / "out"
    assert main(["run", str(recipe), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1, captured.err
    m = LINE.match(lines[0])
    assert m and m["file"] == str(recipe), lines[0]
    assert int(m["line"]) == line, lines[0]
    assert m["rest"].startswith(path + ": "), lines[0]
    assert words in m["rest"], lines[0]
    assert not out.exists()


JUDGE_RECIPE = """
name: judged
seed: 5
size: {size}
{model}
columns:
  question: {{sampler: categorical, values: ["Where is my order?", "How do I get a refund?", "Is it waterproof?"]}}
  answer: {{template: "Thanks for asking. {{{{ question }}}} Please see our help page."}}
  helper: {{expr: "question | length", emit: false}}
  judge:
    judge: {judge}
output: {{part_size: {part_size}}}
"""


def judge_recipe(path: Path, judge: dict, size: int = 4, part_size: int = 4, model: dict | None = None) -> Path:
    block = f"model: {orjson.dumps(model).decode()}" if model else ""
    path.write_text(JUDGE_RECIPE.format(size=size, model=block, judge=orjson.dumps(judge).decode(),
                                        part_size=part_size))  # fmt: skip
    return path


def test_judge_scores_parse_on_the_embedded_model(run_cli, tmp_path: Path) -> None:
    recipe = judge_recipe(tmp_path / "r.yaml", {"rubric": "Does the answer help with the question?", "scale": [1, 5]})
    out = tmp_path / "run"
    res = run_cli("run", str(recipe), "--out", str(out), "--workers", "1")
    assert res.returncode == 0, res.stdout + res.stderr
    records = [orjson.loads(x) for x in run_cli("cat", str(out)).stdout.splitlines()]
    assert len(records) == 4
    for r in records:
        assert set(r["judge"]) == {"score", "reason"}, r
        assert type(r["judge"]["score"]) is int and 1 <= r["judge"]["score"] <= 5, r
        assert isinstance(r["judge"]["reason"], str) and r["judge"]["reason"].strip(), r
    attempts = [orjson.loads(x) for x in (out / "logs" / "attempts.jsonl").read_bytes().splitlines()]
    assert {a["backend"] for a in attempts} == {"embedded"} and {a["column"] for a in attempts} == {"judge"}


def fake_model(base_url: str, **extra: object) -> dict:
    return {"backend": "openai", "base_url": base_url, "model": "stub", "concurrency": 8, **extra}


def test_packed_judging_on_the_fake_server(fake_server, tmp_path: Path) -> None:
    srv = fake_server()
    judge = {"rubric": "Is the answer polite?", "scale": [2, 4], "pack": 4, "fields": ["question", "answer"]}
    recipe = judge_recipe(tmp_path / "r.yaml", judge, size=16, part_size=8, model=fake_model(srv.base_url))
    result = datamill.run(str(recipe), tmp_path / "out", workers=1, progress=False)
    assert result.exit_code == 0 and result.summary.slots_failed == 0
    records = datamill.read(tmp_path / "out").to_list()
    assert len(records) == 16 and "helper" not in records[0]
    for r in records:
        assert type(r["judge"]["score"]) is int and 2 <= r["judge"]["score"] <= 4, r
        assert isinstance(r["judge"]["reason"], str) and r["judge"]["reason"], r
    assert srv.stats()["requests"] == 4  # 16 records, 4 per request
    attempts = [orjson.loads(x) for x in (tmp_path / "out" / "logs" / "attempts.jsonl").read_bytes().splitlines()]
    assert [a["pack"] for a in attempts] == [4, 4, 4, 4]


def test_judge_requests_count_in_run_wide_limits(fake_server, tmp_path: Path) -> None:
    srv = fake_server("--latency-ms", "5")
    model = fake_model(srv.base_url, max_requests=5)
    recipe = judge_recipe(tmp_path / "r.yaml", {"rubric": "Good?"}, size=40, part_size=10, model=model)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "datamill", "run", str(recipe), "--out", str(out), "--workers", "2"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=300)
    assert res.returncode == 1 and "request budget spent" in res.stdout, res.stdout + res.stderr
    assert 0 < srv.stats()["requests"] <= 5
    assert subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=300).returncode == 1
    assert srv.stats()["requests"] <= 5  # the budget is the run dir's, across invocations


def rule(prompt: str) -> int:
    """The scripted judge's own rule: a score from the answer it was shown."""
    answer = prompt.split("answer:\n", 1)[1].split("\n\n", 1)[0]
    return 1 + len(answer) % 5


def test_judge_prompt_scores_and_mean_score_gate(tmp_path: Path) -> None:
    srv = ScriptedServer(lambda text: orjson.dumps({"score": rule(text), "reason": "by the rule"}).decode())
    try:
        judge = {"rubric": "Braces {{ stay }} as written.", "fields": ["question", "answer", "helper"]}
        recipe = judge_recipe(tmp_path / "r.yaml", judge, size=12, part_size=4, model=fake_model(srv.base_url))
        result = datamill.run(str(recipe), tmp_path / "out", workers=1, progress=False)
    finally:
        srv.close()
    assert result.exit_code == 0
    records = datamill.read(tmp_path / "out").to_list()
    assert len(srv.asked) == 12
    for prompt in srv.asked:  # every field the judge names, a hidden helper column included
        assert re.search(r"question:\n.+\?\n\nanswer:\nThanks for asking\. .+\n\nhelper:\n\d+$", prompt), prompt
    for r in records:  # each answer lands on its own record
        expected = 1 + len(r["answer"]) % 5
        assert r["judge"] == {"score": expected, "reason": "by the rule"}
    mean = sum(1 + len(r["answer"]) % 5 for r in records) / len(records)
    from datamill.recipe.model import GateSpec

    def verify(bound: float) -> dict:
        gate = GateSpec.model_validate({"column": "judge", "min_mean_score": bound})
        return datamill.verify(tmp_path / "out", count_tokens=False, gates=[gate])

    passing, failing = verify(mean - 0.01), verify(mean + 0.01)
    assert passing["summary"]["metrics"]["columns.judge.mean_score"] == round(mean, 4)
    assert passing["summary"]["metrics"]["columns.judge.scored"] == 12
    assert passing["summary"]["passed"] is True
    assert failing["summary"]["passed"] is False
    assert failing["summary"]["gates"][0]["metric"] == "columns.judge.mean_score"


def test_judge_messages_carry_the_rubric_as_written(tmp_path: Path) -> None:
    from datamill.engine.slots import SlotRunner
    from datamill.recipe.loader import load_file

    judge = {"rubric": "Braces {{ stay }} and {% this %} too.", "scale": [0, 10], "system": "You grade replies."}
    loaded = load_file(judge_recipe(tmp_path / "r.yaml", judge))
    runner = SlotRunner(loaded)
    try:
        [state] = runner.states([0])
        for col in runner.columns[:-1]:
            col.evaluate([state])
        messages, _ = runner.columns[-1].request_messages(state, state.rows[0])  # type: ignore[attr-defined]
    finally:
        runner.close()
    system, user = messages[0]["content"], messages[1]["content"]
    assert system.startswith("You grade replies.\n\nRubric: Braces {{ stay }} and {% this %} too.")
    assert "from 0 (worst) to 10 (best)" in system and '"maximum":10' in system.replace(" ", "")
    # Default fields: every emitted column above the judge (not the hidden helper).
    row = state.rows[0]
    assert user == f"Judge this record.\n\nquestion:\n{row['question']}\n\nanswer:\n{row['answer']}"


def test_judge_recipes_round_trip_hash_and_touch_hosts_like_llm_columns(tmp_path: Path) -> None:
    from datamill.recipe.loader import load_file
    from datamill.recipe.model import Recipe
    from datamill.recipe.trust import touches

    base = {"rubric": "Good?", "scale": [1, 3], "model": fake_model("http://127.0.0.1:9/v1", concurrency=4)}
    loaded = load_file(judge_recipe(tmp_path / "a.yaml", base))
    # Operational model settings are not part of the hash; the rubric is.
    busier = load_file(judge_recipe(tmp_path / "b.yaml", {**base, "model": {**base["model"], "concurrency": 64}}))
    other = load_file(judge_recipe(tmp_path / "c.yaml", {**base, "rubric": "Polite?"}))
    assert loaded.hash == busier.hash != other.hash
    # A dumped recipe (the API's form, and the manifest's) loads back as the same judge.
    dumped = loaded.recipe.model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert dumped["columns"]["judge"] == {"judge": base}
    again = datamill.load_recipe(dumped)
    assert again.model == loaded.recipe and again.hash == loaded.hash
    assert Recipe.model_validate(loaded.recipe.model_dump(mode="json")) == loaded.recipe
    assert [h["host"] for h in touches(loaded)["hosts"]] == ["127.0.0.1"]


GATED = """
name: gated
source: {path: snippets.jsonl}
columns:
  code_ok: {validate: python, field: code}
gates:
  - {column: code_ok, max_invalid_rate: 0.25}
"""


def test_invalid_rate_gates_pass_and_fail(run_cli, tmp_path: Path) -> None:
    from datamill.recipe.model import GateSpec

    snippets = PYTHON_VALID + PYTHON_VALID[:3] + PYTHON_INVALID[:2]  # 2 invalid of 10
    (tmp_path / "snippets.jsonl").write_text("".join(json.dumps({"code": c}) + "\n" for c in snippets))
    (tmp_path / "r.yaml").write_text(GATED)
    out = tmp_path / "out"
    assert datamill.run(str(tmp_path / "r.yaml"), out, workers=1, progress=False).exit_code == 0
    report = datamill.verify(out, count_tokens=False)  # the recipe's gate, read back from the manifest
    metrics = report["summary"]["metrics"]
    assert (metrics["columns.code_ok.invalid_rate"], metrics["columns.code_ok.invalid"]) == (0.2, 2)
    assert report["summary"]["passed"] is True
    assert report["summary"]["gates"][0]["metric"] == "columns.code_ok.invalid_rate"
    strict = GateSpec.model_validate({"column": "code_ok", "max_invalid_rate": 0.1})
    failed = datamill.verify(out, count_tokens=False, gates=[strict])
    assert failed["summary"]["passed"] is False
    assert [g["passed"] for g in failed["summary"]["gates"]] == [True, False]
    assert failed["summary"]["gates"][1]["reason"] == "0.2 > max 0.1"
    # From a gates file on the command line: a misnamed column fails with a reason, exit 1.
    (tmp_path / "gates.yaml").write_text("- {column: code, max_invalid_rate: 0.5}\n")
    res = run_cli("verify", str(out), "--no-tokens", "--gates", str(tmp_path / "gates.yaml"))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "no record has a validate verdict {ok} in field 'code'" in res.stdout, res.stdout
