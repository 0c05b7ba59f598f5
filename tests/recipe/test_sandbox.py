"""Issue 20: a recipe is data. Known Jinja2 escapes (SSTI payloads) in templates, expressions and
prompts are refused with one line, exit 2, nothing written and no side effect on the machine;
what only shows at render time is refused there by the sandbox, the same way."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from datamill.cli import main

LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<path>[\w.]+): unsafe template: (?P<why>.+)$")

# Each payload would run `touch MARK` (or read the interpreter's innards) if it got through.
STATIC = [
    ("cycler-globals", "{{ cycler.__init__.__globals__.os.system('touch MARK') }}"),
    ("joiner-globals", "{{ joiner.__init__.__globals__.os.system('touch MARK') }}"),
    ("namespace-globals", "{{ namespace.__init__.__globals__.os.system('touch MARK') }}"),
    ("lipsum-globals", "{{ lipsum.__globals__['os'].system('touch MARK') }}"),
    ("class-mro-subclasses", "{{ ''.__class__.__mro__[1].__subclasses__() }}"),
    ("subscript-class", "{{ x['__class__'] }}"),
    ("escaped-subscript", "{{ x['\\x5f\\x5fclass\\x5f\\x5f'] }}"),
    (
        "template-reference",
        "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.system('touch MARK') }}",
    ),
    ("self-module", "{{ self.__init__.__globals__ }}"),
    ("attr-filter", "{{ x|attr('__class__') }}"),
    ("attr-filter-built", "{{ x|attr('_' ~ '_class_' ~ '_') }}"),
    ("format-method", "{{ '{0.__class__}'.format(x) }}"),
    ("format-filter", "{{ '%s'|format(x.__class__) }}"),
    ("int-base-subclasses", "{{ x.__class__.__base__.__subclasses__() }}"),
    ("set-then-call", "{% set g = cycler.__init__.__globals__ %}{{ g.os.system('touch MARK') }}"),
    ("params-class", "{{ params.__class__ }}"),
    ("dict-dunder", "{{ x.__dict__ }}"),
    ("for-subclasses", "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}"),
    ("range-self", "{{ range.__self__.__import__('os').system('touch MARK') }}"),
    ("dict-global", "{{ dict.__base__.__subclasses__() }}"),
    ("private-attr", "{{ x._secret }}"),
    ("getattr-via-map", "{{ [x]|map(attribute='__class__')|list }}"),
    ("loop-cycle", "{% for i in [1] %}{{ loop.cycle.__globals__ }}{% endfor %}"),
]
# Built at render time, out of sight of a static check: the sandbox refuses them when they run.
RENDER = [
    ("built-subscript", "{{ x[('_' ~ '_class_' ~ '_')] }}"),
    ("built-format", "{{ ('{0.' ~ '_' ~ '_class_' ~ '_}').format(x) }}"),
    ("mutating-method", "{{ [1, 2].append(3) }}"),
]


def _recipe(tmp_path: Path, payload: str, kind: str, mark: Path) -> Path:
    body = payload.replace("MARK", str(mark))
    field = {"template": "template:", "expr": "expr:", "llm": "llm:\n      prompt:"}[kind]
    if kind == "expr":  # an expression is the inside of {{ }}
        body = body[3:-3]
    text = (
        "name: t\nseed: 1\nsize: 2\ncolumns:\n  x: {sampler: integer, low: 1, high: 3}\n  y:\n"
        f"    {field} |-\n      {body}\n"
    )
    if kind == "llm":
        text = text.replace(f"    {field} |-\n      {body}\n", f"    llm:\n      prompt: |-\n        {body}\n")
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def _refused(tmp_path: Path, payload: str, kind: str, capsys: pytest.CaptureFixture[str]) -> str:
    mark = tmp_path / "pwned"
    recipe = _recipe(tmp_path, payload, kind, mark)
    out = tmp_path / "out"
    code = main(["run", str(recipe), "--out", str(out), "--progress", "none"])
    captured = capsys.readouterr()
    assert code == 2, captured.out + captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    m = LINE.match(lines[0])
    assert m, lines[0]
    assert m["file"] == str(recipe)
    want = {"template": "columns.y.template", "expr": "columns.y.expr", "llm": "columns.y.llm.prompt"}[kind]
    assert m["path"] == want, lines[0]
    assert not out.exists(), "nothing is written"
    assert not mark.exists(), "the payload ran"
    return m["why"]


def _is_expression(payload: str) -> bool:
    return payload.startswith("{{ ") and payload.endswith(" }}") and "{%" not in payload


# Every payload as a template and as a prompt; those that are one expression also as an `expr`.
LOAD_CASES = [
    pytest.param(payload, kind, id=f"{name}-{kind}")
    for name, payload in STATIC
    for kind in ("template", "expr", "llm")
    if kind != "expr" or _is_expression(payload)
]


@pytest.mark.parametrize(("payload", "kind"), LOAD_CASES)
def test_known_escapes_are_refused_at_load_time(
    payload: str, kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    why = _refused(tmp_path, payload, kind, capsys)
    assert any(w in why for w in ("not allowed", "not available", "dunder")), why


@pytest.mark.parametrize("kind", ["template", "llm"])
@pytest.mark.parametrize("payload", [p for _, p in RENDER], ids=[i for i, _ in RENDER])
def test_escapes_built_at_render_time_are_refused_by_the_sandbox(
    payload: str, kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    why = _refused(tmp_path, payload, kind, capsys)
    assert "unsafe" in why or "not safely" in why or "modify" in why or "immutable" in why, why


def test_the_table_has_at_least_twenty_payloads() -> None:
    assert len(STATIC) + len(RENDER) >= 20


def test_useful_filters_and_tests_still_work(run_cli, tmp_path: Path) -> None:
    recipe = tmp_path / "ok.yaml"
    recipe.write_text(
        "name: ok\nseed: 1\nsize: 3\ncolumns:\n  x: {sampler: integer, low: 1, high: 3}\n"
        "  y: {template: \"{{ (x * 2)|string|upper }}-{{ ['a','b']|join(',') }}-{{ x is odd }}"
        "-{{ range(x)|list|length }}-{{ '%03d'|format(x) }}-{{ 'A B'.lower().split() }}\"}\n"
        '  z: {expr: "[x, 1]|max"}\n'
    )
    out = tmp_path / "run"
    res = run_cli("run", str(recipe), "--out", str(out))
    assert res.returncode == 0, res.stderr
    import orjson

    for r in (orjson.loads(x) for x in run_cli("cat", str(out)).stdout.splitlines()):
        x = r["x"]
        assert r["y"] == f"{x * 2}-a,b-{x % 2 == 1}-{x}-{x:03d}-['a', 'b']"
        assert r["z"] == max(x, 1)
