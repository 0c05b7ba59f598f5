"""lambda-traces against an independent reference (tests/reference_lambda.py).

Every emitted record must be a correct leftmost-outermost beta step with a correct redex span,
in the documented grammar; property tests drive the generator's term functions with
hypothesis-made terms.
"""

from __future__ import annotations

import itertools
import random
import sys
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reference_lambda as ref
from datamill.recipes.lambda_traces import terms

sys.setrecursionlimit(20_000)


def to_ref(t: terms.Term) -> tuple:
    if type(t) is int:
        return ("v", t)
    if len(t) == 1:
        return ("l", to_ref(t[0]))
    return ("a", to_ref(t[0]), to_ref(t[1]))


def from_ref(t: tuple) -> terms.Term:
    if t[0] == "v":
        return t[1]
    if t[0] == "l":
        return (from_ref(t[1]),)
    return (from_ref(t[1]), from_ref(t[2]))


def closed_terms(max_leaves: int = 25) -> st.SearchStrategy[tuple]:
    """Closed de Bruijn terms in the reference's shape, biased towards redexes."""

    def build(binders: int, budget: int) -> st.SearchStrategy[tuple]:
        options: list[st.SearchStrategy[tuple]] = []
        if binders:
            options.append(st.integers(0, binders - 1).map(lambda i: ("v", i)))
        if budget > 0:
            options.append(st.deferred(lambda: build(binders + 1, budget - 1)).map(lambda b: ("l", b)))
            if binders or budget > 2:
                sub = st.deferred(lambda: build(binders, budget // 2))
                options.append(st.tuples(sub, sub).map(lambda fa: ("a", fa[0], fa[1])))
                lam = st.deferred(lambda: build(binders + 1, budget // 2)).map(lambda b: ("l", b))
                options.append(st.tuples(lam, sub).map(lambda fa: ("a", fa[0], fa[1])))  # a redex
        if not options:
            return st.just(("l", ("v", 0)))
        return st.one_of(*options)

    return build(0, max_leaves)


def check_span(text: str, span: list[int] | tuple[int, int]) -> None:
    node = ref.parse(text)
    redex = ref.leftmost_outermost_redex(node)
    if redex is None:
        assert tuple(span) == (0, 0), f"normal form {text!r} must have span [0, 0], got {span}"
        return
    allowed = {(redex.start, redex.end)}
    if redex.outer:
        allowed.add(redex.outer)
    assert tuple(span) in allowed, f"span {span} of {text!r}: expected one of {sorted(allowed)}"
    inner = ref.parse(text[redex.start : redex.end])
    assert inner.kind == "a" and inner.fun is not None and inner.fun.kind == "l"


# ---------------------------------------------------------------------------------------------
# Property tests of the term functions


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(closed_terms())
def test_render_is_the_reference_grammar_and_parses_back(t: tuple) -> None:
    text = terms.render(from_ref(t))
    assert text == ref.show(t)
    assert ref.to_tuple(ref.parse(text)) == t


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(closed_terms())
def test_step_and_span_match_the_named_reference(t: tuple) -> None:
    ours = from_ref(t)
    r = terms.Renderer()
    text, size, depth, has_redex = r.info(ours)
    assert size == ref.size(t)
    assert depth == ref.depth(t)
    expected = ref.step(t)
    assert has_redex == (expected is not None)
    check_span(text, r.redex_span(ours))
    got = terms.step(ours)
    assert (None if got is None else to_ref(got)) == expected


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**63 - 1), st.integers(2, 15), st.integers(2, 200))
def test_random_terms_are_closed_and_within_bounds(seed: int, max_depth: int, max_size: int) -> None:
    t = to_ref(terms.random_term(random.Random(seed), max_depth, max_size))
    assert ref.is_closed(t)
    assert ref.depth(t) <= max_depth
    assert ref.size(t) <= max(max_size, 2)


def test_adjacent_variables_are_separated_and_abstractions_parenthesised() -> None:
    # \x. x x (\y. y) applied: the reference printer and ours agree on hand-picked shapes.
    t = ("l", ("a", ("a", ("v", 0), ("v", 0)), ("l", ("v", 0))))
    assert terms.render(from_ref(t)) == "\\.0 0(\\.0)"
    redex = ("a", ("l", ("v", 0)), ("a", ("v", 0), ("v", 1)))
    wrapped = ("l", ("l", ("a", ("v", 1), redex)))
    text = terms.render(from_ref(wrapped))
    assert text == "\\.\\.1((\\.0)(0 1))"
    assert terms.Renderer().redex_span(from_ref(wrapped)) == (6, 16)
    assert text[6:16] == "(\\.0)(0 1)"


def test_trace_stops_at_caps_instead_of_running_away() -> None:
    omega = ((((0, 0),)), ((0, 0),))  # (\.0 0)(\.0 0) never normalises
    steps, why = terms.normal_order_trace(omega, step_cap=50, size_cap=1000)
    assert steps is None and why == "step_cap"
    grow = (((0, (0, 0)),), ((0, (0, 0)),))  # (\.0 0 0)(\.0 0 0) grows each step
    steps, why = terms.normal_order_trace(grow, step_cap=10_000, size_cap=200)
    assert steps is None and why == "size_cap"


# ---------------------------------------------------------------------------------------------
# Every record of a real run, checked by the reference


@pytest.fixture(scope="module")
def records(run_cli, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("lt") / "run"
    res = run_cli("run", "lambda-traces", "--size", "400", "--seed", "7", "--out", str(out), "--workers", "2")
    assert res.returncode == 0, res.stderr
    cat = run_cli("cat", str(out))
    return [orjson.loads(line) for line in cat.stdout.splitlines()]


def test_every_record_is_a_correct_normal_order_step(records: list[dict]) -> None:
    assert len(records) > 1000
    traces: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        traces[rec["trace_id"]].append(rec)
        t = ref.to_tuple(ref.parse(rec["term"]))
        assert ref.is_closed(t), rec["sample_id"]
        assert rec["term"] == ref.show(t), "term is not in the canonical grammar"
        assert rec["meta"]["size"] == ref.size(t)
        assert rec["meta"]["depth"] == ref.depth(t)
        check_span(rec["term"], rec["target_span"])
        expected = ref.step(t)
        if rec["next_term"] is None:
            assert expected is None, f"{rec['sample_id']}: final step is not in normal form"
            assert rec["step_k"] == rec["steps_total"]
            assert rec["term"] == rec["normal_form"]
        else:
            assert expected is not None
            assert ref.to_tuple(ref.parse(rec["next_term"])) == expected, rec["sample_id"]
    assert len({r["sample_id"] for r in records}) == len(records)
    for tid, steps in traces.items():
        assert [s["step_k"] for s in steps] == list(range(len(steps))), tid
        assert {s["steps_total"] for s in steps} == {len(steps) - 1}
        assert len({s["normal_form"] for s in steps}) == 1
        assert len({orjson.dumps(s["meta"]["seed"]) for s in steps}) == 1
        for a, b in itertools.pairwise(steps):
            assert a["next_term"] == b["term"]
        start = ref.to_tuple(ref.parse(steps[0]["term"]))
        nf = ref.normalize(start, max_steps=len(steps))
        assert nf is not None and ref.show(nf[0]) == steps[0]["normal_form"] and nf[1] == len(steps) - 1


def test_cycles_follow_the_plan(records: list[dict]) -> None:
    depth = [6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    for rec in records:
        slot = int(rec["trace_id"].rsplit(":", 1)[1])
        assert rec["meta"]["cycle"] == slot % 10
        if rec["step_k"] == 0:
            assert rec["meta"]["depth"] <= depth[slot % 10]


def test_dropped_terms_are_counted_not_emitted(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    # Tiny caps force drops; every slot is either a complete trace or counted as dropped.
    res = run_cli(
        "run", "lambda-traces", "--size", "200", "--out", str(out), "--param", "step_cap=3", "--param", "size_cap=60"
    )
    assert res.returncode == 0, res.stderr
    assert "dropped:" in res.stdout
    status = orjson.loads(run_cli("status", str(out), "--json").stdout)
    dropped = sum(status["dropped"].values())
    assert dropped > 0
    recs = [orjson.loads(x) for x in run_cli("cat", str(out)).stdout.splitlines()]
    traces = {r["trace_id"] for r in recs}
    assert len(traces) + dropped == 200
    for r in recs:
        assert r["steps_total"] <= 3
        assert r["meta"]["size"] <= 60
