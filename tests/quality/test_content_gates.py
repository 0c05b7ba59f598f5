"""Content gates (``check: grounded | relevant | distinct_spans``): planted defects are caught, exactly.

Defects are planted by this file's own code on real contextual items; the gates must find each
planted span and nothing else.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import orjson
import pytest

from helpers import ScriptedServer

INT = re.compile(r"<int>(.*?)</int>", re.S)
PASSAGE_SECTION = re.compile(r"(?ms)^Passages:\n(.*?)(?:\n\n|\Z)")
QUESTION = re.compile(r"(?m)^User: (.*)$")
NUMBER = re.compile(r"\d+(?:\.\d+)?")
BAD_FIGURE = "987654321"


@pytest.fixture(scope="module")
def items(run_cli, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("ctx") / "run"
    res = run_cli("run", "contextual", "--size", "400", "--seed", "7", "--out", str(out), "--progress", "none")
    assert res.returncode == 0, res.stderr
    return out, [orjson.loads(x) for x in run_cli("cat", str(out)).stdout.splitlines()]


def replace_span(teacher: str, index: int, new: str) -> str:
    spans = list(INT.finditer(teacher))
    m = spans[index]
    return teacher[: m.start(1)] + new + teacher[m.end(1) :]


def cite_a_distractor(rec: dict) -> bool:
    """The first span restates a passage the teacher did not cite: the one nearest the question in words."""
    section = PASSAGE_SECTION.search(rec["prompt"])
    passages = dict(re.findall(r"(?m)^\[(\d+)\] (.+)$", section.group(1)))
    cited = set(re.findall(r"[Pp]assage \[(\d+)\]", rec["teacher_text"]))
    question = set(re.findall(r"\w+", QUESTION.search(rec["prompt"]).group(1).lower()))
    others = [n for n in passages if n not in cited]
    if not others:
        return False
    near = max(others, key=lambda n: (len(question & set(re.findall(r"\w+", passages[n].lower()))), n))
    text = passages[near].rstrip(".")
    rec["teacher_text"] = replace_span(rec["teacher_text"], 0, text[0].lower() + text[1:])
    return True


def duplicate_a_span(rec: dict) -> bool:
    spans = INT.findall(rec["teacher_text"])
    if len(spans) < 2:
        return False
    rec["teacher_text"] = replace_span(rec["teacher_text"], 1, spans[0])
    return True


def change_a_figure(rec: dict) -> bool:
    """A figure of the first span that the question does not give becomes one found nowhere."""
    span = INT.findall(rec["teacher_text"])[0]
    asked = set(NUMBER.findall(QUESTION.search(rec["prompt"]).group(1)))
    for m in NUMBER.finditer(span):
        if m.group(0) not in asked:
            new = span[: m.start()] + BAD_FIGURE + span[m.end() :]
            rec["teacher_text"] = replace_span(rec["teacher_text"], 0, new)
            return True
    return False


def misattribute_a_figure(rec: dict) -> bool:
    """The first span keeps its keys but takes its figure from another passage (a wrong attribution)."""
    passages = dict(re.findall(r"(?m)^\[(\d+)\] (.+)$", PASSAGE_SECTION.search(rec["prompt"]).group(1)))
    cited = re.findall(r"[Pp]assage \[(\d+)\]", rec["teacher_text"])
    asked = set(NUMBER.findall(QUESTION.search(rec["prompt"]).group(1)))
    span = INT.findall(rec["teacher_text"])[0]
    key = set(NUMBER.findall(passages[cited[0]]))
    values = [f for f in NUMBER.findall(span) if f not in asked]
    if len(values) != 1 or NUMBER.findall(span).count(values[0]) != 1:
        return False
    for n in sorted(passages):
        other = [f for f in NUMBER.findall(passages[n]) if f not in key and f not in asked]
        if n not in cited and other:
            new = re.sub(rf"\b{values[0]}\b", other[0], span, count=1)
            rec["teacher_text"] = replace_span(rec["teacher_text"], 0, new)
            return True
    return False


def test_planted_distractors_duplicates_and_figures_are_caught_exactly(run_cli, items, tmp_path: Path) -> None:
    run_dir, recs = items
    rng = random.Random(13)
    want = round(0.05 * len(recs))  # 5% of the items for each kind of defect
    planted: dict[str, set[str]] = {}
    used: set[str] = set()
    for gate, plant, pool in (
        ("content.relevant", cite_a_distractor, [r for r in recs if r["scenario"] == "passage"]),
        ("content.distinct_spans", duplicate_a_span, [r for r in recs if len(INT.findall(r["teacher_text"])) >= 2]),
        ("content.grounded", change_a_figure, [r for r in recs if INT.search(r["teacher_text"])]),
        ("misattributed", misattribute_a_figure, [r for r in recs if r["scenario"] == "passage"]),
    ):
        rng.shuffle(pool)
        planted[gate] = set()
        for rec in pool:
            if len(planted[gate]) == want:
                break
            if rec["sample_id"] not in used and plant(rec):
                planted[gate].add(rec["sample_id"])
                used.add(rec["sample_id"])
        assert len(planted[gate]) == want == 20
    data = tmp_path / "planted.jsonl"
    data.write_bytes(b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in recs))
    report = tmp_path / "r.json"
    res = run_cli("verify", str(data), "--report", str(report), "--no-tokens")
    assert res.returncode == 1, res.stdout
    s = orjson.loads(report.read_bytes())["summary"]
    spans = sum(len(INT.findall(r["teacher_text"])) for r in recs)
    # A figure from the wrong passage is in the context, but not in the line the span's keys are in:
    # the grounded gate checks figures within one line (within: line).
    planted["content.grounded"] |= planted.pop("misattributed")
    for gate, ids in planted.items():
        c = s["content"][gate]
        assert c["spans"] == spans and c["failed_spans"] == len(ids) and c["items_failed"] == len(ids), (gate, c)
        assert c["share"] == round(1 - len(ids) / spans, 6)
        assert {e["sample_id"] for e in c["examples"]} <= ids and len(c["examples"]) == 5
        g = next(g for g in s["gates"] if g["metric"] == gate)
        assert not g["passed"] and g["severity"] == "fail"
        assert f"FAIL {gate} = " in res.stdout and f"{len(ids)} of {spans} spans fail" in res.stdout
    reasons = {e["reason"] for e in s["content"]["content.grounded"]["examples"]}
    assert reasons <= {"figures not in the context", "figures not in the line the span is about"}
    # The same items without defects pass every content gate, and a run dir uses its recipe's gates.
    res = run_cli("verify", str(run_dir), "--no-tokens", "--report", str(tmp_path / "clean.json"))
    assert res.returncode == 0, res.stdout
    clean = orjson.loads((tmp_path / "clean.json").read_bytes())["summary"]
    assert {k: v["share"] for k, v in clean["content"].items()} == dict.fromkeys(planted, 1.0)
    assert clean["distinct_tool_schemas"] == 10 and clean["distinct_question_templates"] > 100


QA = [
    # grounded and relevant
    {"sample_id": "a", "context": "The Oslo depot holds 42 trams.", "question": "How many trams does the Oslo depot hold?",
     "answer": "The Oslo depot holds 42 trams."},
    # a figure the context lacks
    {"sample_id": "b", "context": "Bergen has 7 ferries and 3 piers.", "question": "How many ferries does Bergen have?",
     "answer": "Bergen has 9 ferries."},
    # off the question: names the piers, not the ferries
    {"sample_id": "c", "context": "Bergen has 7 ferries and 3 piers.", "question": "How many ferries does Bergen have?",
     "answer": "There are 3 piers."},
    # several spans in one field, one repeated
    {"sample_id": "d", "context": "Tromso logged 12 storms in 2020.", "question": "How many storms hit Tromso in 2020?",
     "answer": "[Tromso logged 12 storms in 2020] [tromso logged 12 storms, in 2020]"},
]  # fmt: skip
GATES = """gates:
  - {check: grounded, spans: {field: answer, pattern: "\\\\[(.*?)\\\\]|^([^\\\\[].*)$"}, context: [context]}
  - {check: relevant, spans: answer, context: [context], question: question, min_overlap: 0.5, severity: warn}
  - {check: distinct_spans, spans: {field: answer, pattern: "\\\\[(.*?)\\\\]"}, metric: qa.distinct, min: 0.9}
"""


def test_any_dataset_declares_content_gates(run_cli, tmp_path: Path) -> None:
    data = tmp_path / "qa.jsonl"
    data.write_bytes(b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in QA))
    gates = tmp_path / "gates.yaml"
    gates.write_text(GATES)
    report = tmp_path / "r.json"
    res = run_cli("verify", str(data), "--gates", str(gates), "--report", str(report), "--no-tokens")
    s = orjson.loads(report.read_bytes())["summary"]
    c = s["content"]
    # grounded: the pattern's first group or the whole answer; spans: a, b, c, d x2 = 5; b fails
    assert (c["content.grounded"]["spans"], c["content.grounded"]["failed_spans"]) == (5, 1)
    assert c["content.grounded"]["examples"][0]["sample_id"] == "b"
    # relevant over whole answers: c names neither ferries nor... only "3 piers": fails at 0.5
    assert (c["content.relevant"]["spans"], c["content.relevant"]["failed_spans"]) == (4, 1)
    assert c["content.relevant"]["examples"][0]["sample_id"] == "c"
    assert (c["qa.distinct"]["spans"], c["qa.distinct"]["failed_spans"]) == (2, 1)
    verdicts = {g["metric"]: g["passed"] for g in s["gates"]}
    assert verdicts == {"content.grounded": False, "content.relevant": False, "qa.distinct": False}
    assert res.returncode == 1  # grounded and qa.distinct are fail gates; relevant only warns
    assert "WARN content.relevant" in res.stdout


@pytest.mark.parametrize(
    ("gate", "message"),
    [
        ("{check: grounded, context: [prompt]}", "expected spans"),
        ("{check: grounded, spans: answer}", "expected context"),
        ("{check: relevant, spans: answer, context: [context]}", "expected question"),
        (
            "{check: grounded, spans: {field: answer, pattern: '('}, context: [context]}",
            "expected a regular expression",
        ),
        ("{check: spelling, spans: answer}", "check"),
        ("{min: 1}", "expected metric"),
        ("{check: relevant, spans: answer, context: [context], question: q, min_overlap: 0}", "min_overlap"),
        ("{check: grounded, spans: {field: answer, flags: i}, context: [context]}", "flags"),
    ],
)
def test_malformed_content_gates_are_refused(run_cli, tmp_path: Path, gate: str, message: str) -> None:
    data = tmp_path / "qa.jsonl"
    data.write_bytes(b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in QA))
    gates = tmp_path / "gates.yaml"
    gates.write_text(f"gates:\n  - {gate}\n")
    res = run_cli("verify", str(data), "--gates", str(gates), "--no-tokens")
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr and "gates[0]" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def judge_rule(text: str) -> str:
    """This test's judge: "yes" when the statement names the question's place (its capitalised
    word after the first), "Perhaps." when the statement says maybe, "no" otherwise."""
    question = re.search(r"Question: (.*)", text).group(1)
    statement = re.search(r"Statement: (.*)", text).group(1)
    places = re.findall(r"(?<=[a-z] )[A-Z][a-z]+", question)
    if "maybe" in statement:
        return "Perhaps."
    return "Yes." if places and all(p in statement for p in places) else "No, it does not."


JUDGED = [*QA, {"sample_id": "e", "context": "Oslo is 40 km away.", "question": "How far is Oslo?",
                "answer": "maybe Oslo is near"}]  # fmt: skip


@pytest.mark.parametrize("max_spans", [200, 2])
def test_relevance_by_an_llm_judge(run_cli, tmp_path: Path, max_spans: int) -> None:
    judge = ScriptedServer(judge_rule)
    try:
        data = tmp_path / "qa.jsonl"
        data.write_bytes(b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in JUDGED))
        gates = tmp_path / "gates.yaml"
        gates.write_text(
            "gates:\n  - {check: relevant, spans: answer, context: [context], question: question, severity: warn,\n"
            f"     judge: {{model: {{backend: openai, base_url: '{judge.base_url}', model: judge}},"
            f" max_spans: {max_spans}}}}}\n"
        )
        report = tmp_path / "r.json"
        res = run_cli("verify", str(data), "--gates", str(gates), "--report", str(report), "--no-tokens")
        assert res.returncode == 0, res.stdout + res.stderr  # a warn gate
        c = orjson.loads(report.read_bytes())["summary"]["content"]["content.relevant.judge"]
    finally:
        judge.close()
    by_pair = {(r["question"], r["answer"]): r["sample_id"] for r in JUDGED}
    asked = [(re.search(r"Question: (.*)", t).group(1), re.search(r"Statement: (.*)", t).group(1)) for t in judge.asked]
    judged = {by_pair[pair] for pair in asked}  # every request is one of the data's spans
    assert len(asked) == len(judged) == min(max_spans, 5) == c["judged_spans"] == c["spans"]
    assert c["spans_seen"] == 5
    # The verdicts this test expects: a, b, d name the question's place; c does not; e hedges.
    verdict = {"a": "yes", "b": "yes", "c": "no", "d": "yes", "e": "unclear"}
    assert c["share"] == round(sum(verdict[x] == "yes" for x in judged) / len(judged), 6)
    assert c["unclear"] == sum(verdict[x] == "unclear" for x in judged)
    reasons = {e["sample_id"]: e["reason"] for e in c["examples"]}
    assert set(reasons) == {x for x in judged if verdict[x] != "yes"}
    assert all(reasons[x] == "the judge said no" for x in reasons if verdict[x] == "no")
    assert all("not yes or no" in reasons[x] for x in reasons if verdict[x] == "unclear")
    assert "content.relevant.judge = " in res.stdout
