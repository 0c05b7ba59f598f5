"""The contextual recipe (seed 000): shards, quotas, span caps, report fields, extraction round trip."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from tokenizers import Tokenizer

from datamill.tokenize import export_smollm2
from helpers import ScriptedServer


@pytest.fixture(scope="module")
def run_1k(run_cli, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ctx") / "run"
    res = run_cli("run", "contextual", "--size", "1000", "--seed", "42", "--num-shards", "1", "--shard-index", "0",
                  "--integration-span-cap", "3", "--out", str(out))  # fmt: skip
    assert res.returncode == 0, res.stderr
    return out


def records(run_cli, out: Path) -> list[dict]:
    return [orjson.loads(x) for x in run_cli("cat", str(out)).stdout.splitlines()]


def test_ten_shards_merged_equal_one_shard(run_cli, run_1k: Path, tmp_path: Path) -> None:
    dirs = []
    for s in range(10):
        d = tmp_path / f"s{s}"
        res = run_cli("run", "contextual", "--size", "1000", "--seed", "42", "--num-shards", "10", "--shard-index", str(s),
                      "--integration-span-cap", "3", "--out", str(d), "--workers", "1")  # fmt: skip
        assert res.returncode == 0, res.stderr
        dirs.append(d)
    merged = tmp_path / "merged.jsonl"
    assert run_cli("merge", *map(str, dirs), "--out", str(merged)).returncode == 0
    one = tmp_path / "one.jsonl"
    assert run_cli("merge", str(run_1k), "--out", str(one)).returncode == 0
    assert merged.read_bytes() == one.read_bytes()
    recs = [orjson.loads(x) for x in merged.read_bytes().splitlines()]
    assert len(recs) == 1000  # shards partition the N items (seed 000 made 10x as many)
    assert len({r["sample_id"] for r in recs}) == 1000
    # shard_index is the slot's shard in the 10-shard layout: what each shard run produced.
    for s, d in enumerate(dirs):
        assert {r["shard_index"] for r in records(run_cli, d)} == {s}


def test_n1000_quotas_caps_lengths_and_diversity(run_cli, run_1k: Path, tmp_path: Path) -> None:
    recs = records(run_cli, run_1k)
    assert {"sample_id", "shard_index", "scenario", "prompt", "teacher_text", "control", "negative_control"} <= set(
        recs[0]
    )
    long_share = sum(r["long_context"] for r in recs) / len(recs)
    assert 0.02 <= long_share <= 0.05
    assert len({r["prompt"] for r in recs}) >= 950 and len({r["teacher_text"] for r in recs}) >= 950
    eligible = [r for r in recs if not r["control"] and not r["negative_control"]]
    spans = [len(re.findall(r"<int>.*?</int>", r["teacher_text"], re.S)) for r in eligible]
    assert sum(1 for n in spans if n <= 3) / len(eligible) >= 0.99 and min(spans) >= 1
    for r in recs:
        if r["control"] or r["negative_control"]:
            assert "<int>" not in r["teacher_text"]
        if r["scenario"].startswith("tool"):
            for call in re.findall(r"<tool_call>(.*?)</tool_call>", r["teacher_text"], re.S):
                body = orjson.loads(call)
                assert set(body) == {"name", "arguments"} and isinstance(body["arguments"], dict)
    extracted = tmp_path / "x.jsonl"
    assert run_cli("extract", "contextual", "--in", str(run_1k), "--out", str(extracted)).returncode == 0
    report = tmp_path / "r.json"
    res = run_cli("verify", str(extracted), "--report", str(report), "--perf-budget-sec-per-100", "2.0")
    assert res.returncode == 0, res.stdout
    rep = orjson.loads(report.read_bytes())
    h, s = rep["header"], rep["summary"]
    for key in ("report_version", "num_items", "num_eligible", "num_controls", "num_negative_controls"):
        assert key in h
    for key in ("long_context_count", "long_context_quota", "token_length_stats", "integration_span_count_histogram",
                "integration_spans_over_cap_count", "integration_spans_over_cap_items", "time_per_100_items",
                "top_regex_offenders", "duplicate_sample_ids"):  # fmt: skip
        assert key in s, key
    assert h["num_items"] == 1000 and h["num_eligible"] == len(eligible)
    assert s["long_context_quota"]["ok"] and s["long_context_count"] == sum(r["long_context"] for r in recs)
    stats = s["token_length_stats"]
    assert stats["p10"] < stats["p50"] < stats["p90"] and stats["p90"] >= 8000
    assert s["integration_spans_over_cap_count"] == 0 and s["duplicate_sample_ids"] == []
    assert {g["metric"] for g in s["gates"]} >= {
        "long_context_quota",
        "integration_spans_over_cap_share",
        "time_per_100_items",
    }
    # Long items really are 8k+ tokens by the default tokenizer (counted here with tokenizers directly).
    from datamill.tokenize import default_tokenizer_path

    tok = Tokenizer.from_file(str(default_tokenizer_path()))
    tok.no_truncation()
    for r in recs:
        if r["long_context"]:
            assert len(tok.encode(r["prompt"], add_special_tokens=False).ids) >= 8192


@pytest.mark.parametrize("args", [["--size", "10"], ["--size", "300", "--disable-long-context"]])
def test_no_long_context_below_20_or_when_disabled(run_cli, tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / "run"
    assert run_cli("run", "contextual", *args, "--out", str(out)).returncode == 0
    assert not any(r["long_context"] for r in records(run_cli, out))


def test_extracted_token_offsets_decode_back_to_the_marked_text(run_cli, run_1k: Path, tmp_path: Path) -> None:
    tok_path = export_smollm2(tmp_path / "smollm2")  # cased byte-level BPE: decoding is exact
    extracted = tmp_path / "x.jsonl"
    res = run_cli("extract", "contextual", "--in", str(run_1k), "--out", str(extracted), "--tokenizer", str(tok_path))
    assert res.returncode == 0, res.stderr
    tok = Tokenizer.from_file(str(tok_path))
    checked = 0
    for line in extracted.read_bytes().splitlines():
        item = orjson.loads(line)
        clean = item["teacher_clean"]
        # The marked texts, found independently in the raw markup:
        marked = re.findall(r"<int>(.*?)</int>", item["teacher_text"], re.S)
        assert [s["text"] for s in item["spans"] if s["kind"] == "integration"] == marked
        ids = tok.encode(clean, add_special_tokens=False).ids
        for span in item["spans"]:
            assert clean[span["char_start"] : span["char_end"]] == span["text"]
            decoded = tok.decode(ids[span["token_start"] : span["token_end"]])
            assert decoded.strip() == span["text"], (span, decoded)
            checked += 1
    assert checked > 1500


def llm_teacher_recipe(tmp_path: Path, base_url: str) -> Path:
    recipe = Path(__file__).resolve().parents[2] / "examples" / "contextual-llm-teacher.yaml"
    local = tmp_path / "r.yaml"
    local.write_text(recipe.read_text().replace("http://127.0.0.1:8900/v1", base_url))
    return local


def test_teacher_text_from_an_llm_column(run_cli, fake_server, tmp_path: Path) -> None:
    srv = fake_server()
    out = tmp_path / "run"
    res = run_cli("run", str(llm_teacher_recipe(tmp_path, srv.base_url)), "--size", "20", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    recs = records(run_cli, out)
    assert len(recs) == 20 and srv.stats()["requests"] == 20
    for r in recs:
        brief, prefix = r["teacher_brief"], r["teacher_prefix"]
        answer = r["teacher_text"].removeprefix(prefix)
        assert r["teacher_text"].startswith(prefix) and answer.startswith("answer ")  # the server's reply
        assert brief[:60] in answer  # it answered this item's own brief
        # The brief is the scenario without background: the prompt's question, its passages or the results.
        assert "Background records" not in brief and len(brief) < 2500
        assert QUESTION.search(brief).group(1) == QUESTION.search(r["prompt"]).group(1)
        section = PASSAGE_SECTION.search(r["prompt"])
        if r["scenario"] == "passage":
            assert section.group(0) in brief
        if r["scenario"].startswith("tool"):
            results = [res for _, res in CALL_THEN_RESULT.findall(prefix)]
            assert results and "Tool results:\n" + "\n".join(results) in brief
        else:
            assert prefix == ""


def naive_teacher(brief: str) -> str:
    """A teacher with this test's own rule: cite passage [1] whatever was asked; for tools, restate the
    question about each result with all it says; use no unrelated passage."""
    passages = PASSAGE_SECTION.search(brief)
    if passages:
        first = re.search(r"(?m)^\[1\] (.+)$", passages.group(1)).group(1)
        return f"From passage [1], <int>{first.rstrip('.')}</int>."
    if "Tool results:" in brief:
        results = [orjson.loads(x) for x in brief.split("Tool results:\n", 1)[1].split("\n\n")[0].splitlines()]
        sentences = re.split(r"(?<=[?.!;])\s+", QUESTION.search(brief).group(1))
        spans = []
        for res in results:  # one span per result: the user's words about its subject, then all it says
            subject = next(
                str(res[k]) for k in ("city", "symbol", "flight", "tracking_id", "origin", "from") if k in res
            )
            asked = " ".join(x for x in sentences if subject in x)
            spans.append(f"<int>{asked} {', '.join(f'{k} {v}' for k, v in res.items())}</int>")
        return " ".join(spans)
    return "Speaking generally, it depends on the place."


def test_an_llm_teacher_is_checked_by_the_same_gates(run_cli, tmp_path: Path) -> None:
    srv = ScriptedServer(naive_teacher)
    try:
        out = tmp_path / "run"
        res = run_cli("run", str(llm_teacher_recipe(tmp_path, srv.base_url)), "--size", "120", "--out", str(out))
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        srv.close()
    recs = records(run_cli, out)
    passage = [r for r in recs if r["scenario"] == "passage"]
    tools = [r for r in recs if r["scenario"].startswith("tool")]
    # This test's own reading: passage [1] is relevant when it answers one of the question's sentences.
    off = []
    for r in passage:
        first = re.search(r"(?m)^\[1\] (.+)$", PASSAGE_SECTION.search(r["prompt"]).group(1)).group(1)
        asks = [parse_part(p) for p in re.split(r"(?<=[?.])\s+", QUESTION.search(r["prompt"]).group(1).strip())]
        if not any(answers(first, ask) for ask in asks):
            off.append(r["sample_id"])
    assert 0 < len(off) < len(passage)
    report = tmp_path / "v.json"
    res = run_cli("verify", str(out), "--no-tokens", "--report", str(report))
    assert res.returncode == 1, res.stdout  # the recipe's relevance gate fails: the teacher cites whatever is first
    c = orjson.loads(report.read_bytes())["summary"]["content"]
    tool_spans = sum(len(CALL_THEN_RESULT.findall(r["teacher_text"])) for r in tools)
    assert c["content.relevant"]["spans"] == len(passage) + tool_spans
    assert c["content.relevant"]["failed_spans"] == len(off)
    assert {e["sample_id"] for e in c["content.relevant"]["examples"]} <= set(off)
    assert c["content.grounded"]["share"] == c["content.distinct_spans"]["share"] == 1.0


# -- meaning: checked with this file's own parsing, not the generator's ---------------------------

QUESTION = re.compile(r"(?m)^User: (.*)$")
PASSAGE_SECTION = re.compile(r"(?ms)^Passages:\n(.*?)(?:\n\n|\Z)")
TOOL_SECTION = re.compile(r"(?ms)^Tools:\n(.*?)(?:\n\n|\Z)")
CALL_THEN_RESULT = re.compile(r"<tool_call>(.*?)</tool_call>\n<tool_result>(.*?)</tool_result>", re.S)
INT = re.compile(r"<int>(.*?)</int>", re.S)
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
# Which need names which tool: the words a user says for it (this test's own table).
NEED_WORDS = {
    "get_weather": ("outside", "umbrella", "how warm"),
    "get_stock_price": ("trading at", "shares doing", "a quote"),
    "lookup_population": ("people live", "by residents", "headcount"),
    "convert_currency": ("how much is", "convert ", "what is that in"),
    "get_flight_status": ("flight ", "leave from"),
    "get_air_quality": ("go running", "breathe easy", "smog"),
    "get_package_status": ("parcel", "package", "shipped yet"),
    "get_local_time": ("hour is it", "too late to call", "clock showing"),
    "get_route": ("how far", "the drive", "drive from"),
    "get_sun_times": ("dawn break", "dusk", "daylight"),
}


def numbers(text: str) -> set[str]:
    out = set()
    for raw in NUMBER.findall(text):
        s = raw.rstrip(",").replace(",", "")
        if "." in s:
            s = s.rstrip("0").rstrip(".")
        out.add(s.lstrip("0") or "0")
    return out


def norm(span: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", span.lower()).split())


def words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z0-9]+", text))


def parse_part(part: str) -> dict:
    """Topic, measure, place and year a question sentence asks about (pools read as data)."""
    from datamill.recipes.contextual.pools import TOPICS

    topics = [t for t in TOPICS if t in part]
    assert len(topics) == 1, part
    measures = [m for m, *_ in TOPICS[topics[0]] if m in part]
    assert len(measures) == 1, part
    places = re.findall(r"(?<=[a-z] )[A-Z][a-z]+\b", part)  # a capitalised word inside the sentence
    assert len(places) == 1, part
    years = re.findall(r"\b(1[89]\d\d|20\d\d)\b", part)
    assert len(years) == 1, part
    return {"topic": topics[0], "measure": measures[0], "place": places[0], "year": years[0]}


def answers(passage: str, ask: dict) -> bool:
    return (ask["topic"] in passage and ask["measure"] in passage
            and {ask["place"], ask["year"]} <= words(passage))  # fmt: skip


def test_passage_items_cite_exactly_the_passages_that_answer(run_cli, run_1k: Path) -> None:
    recs = [r for r in records(run_cli, run_1k) if r["scenario"] == "passage"]
    assert len(recs) > 200
    with_hard_negative = 0
    for r in recs:
        prompt, teacher = r["prompt"], r["teacher_text"]
        section = PASSAGE_SECTION.search(prompt)
        assert section, prompt[:300]
        passages = dict(re.findall(r"(?m)^\[(\d+)\] (.+)$", section.group(1)))
        question = QUESTION.search(prompt).group(1)
        parts = re.split(r"(?<=[?.])\s+", question.strip())
        asks = [parse_part(p) for p in parts]
        answering = []
        for ask in asks:
            hits = [n for n, text in passages.items() if answers(text, ask)]
            assert len(hits) == 1, (question, passages)  # one passage, and only it, answers each part
            answering.append(hits[0])
        cited = re.findall(r"[Pp]assage \[(\d+)\]", teacher)
        spans = INT.findall(teacher)
        assert cited == answering, (question, teacher)
        assert len(spans) == len(asks) <= 3
        for span, n, ask in zip(spans, answering, asks, strict=True):
            assert numbers(span) == numbers(passages[n]), (span, passages[n])  # the passage's figures, no other
            assert ask["topic"] in span and ask["measure"] in span and {ask["place"], ask["year"]} <= words(span)
        # Hard negatives: passages that share the topic and measure or place but do not answer.
        near = [n for n, text in passages.items() if n not in answering and asks[0]["topic"] in text
                and (asks[0]["place"] in words(text) or asks[0]["measure"] in text)]  # fmt: skip
        with_hard_negative += bool(near)
        # Nothing outside the numbered passages speaks of the asked topic.
        outside = prompt.replace(section.group(0), "").replace(question, "")
        assert asks[0]["topic"] not in outside
    assert with_hard_negative / len(recs) >= 0.95


def test_tool_items_call_the_tool_the_need_names_then_answer_from_its_result(run_cli, run_1k: Path) -> None:
    recs = [r for r in records(run_cli, run_1k) if r["scenario"].startswith("tool")]
    assert len(recs) > 300
    for r in recs:
        prompt, teacher = r["prompt"], r["teacher_text"]
        question = QUESTION.search(prompt).group(1)
        listed = {s["name"]: s for s in map(orjson.loads, TOOL_SECTION.search(prompt).group(1).splitlines())}
        assert "<tool_result>" not in prompt  # results come after the call, not before it
        pairs = CALL_THEN_RESULT.findall(teacher)
        assert len(pairs) == teacher.count("<tool_call>") == teacher.count("<tool_result>") >= 1
        needed = {name for name, kws in NEED_WORDS.items() if any(k in question.lower() for k in kws)}
        called = [orjson.loads(c)["name"] for c, _ in pairs]
        assert set(called) == needed and len(called) == len(needed), (question, called)
        assert len(listed) > len(called)  # the right tool is picked from several
        assert (len(called) == 1) == (r["scenario"] == "tool_single")
        subjects, results = [], []
        for call_text, result_text in pairs:
            call, result = orjson.loads(call_text), orjson.loads(result_text)
            schema = listed[call["name"]]
            assert set(call["arguments"]) == set(schema["parameters"]["required"])
            for value in call["arguments"].values():
                assert str(value) in question, (value, question)  # arguments come from what the user said
            assert {k: result[k] for k in call["arguments"]} == call["arguments"]  # the result is for this call
            subjects += [v for v in call["arguments"].values() if isinstance(v, str)]
            results.append(result_text)
        spans = INT.findall(teacher.split("</tool_result>")[-1])
        assert spans == INT.findall(teacher) and 1 <= len(spans) <= 3
        for span in spans:
            assert any(numbers(span) <= numbers(res) for res in results), (span, results)
            assert any(s in span for s in subjects), (span, subjects)
        for call_text, _ in pairs:  # every call's result is used
            args = orjson.loads(call_text)["arguments"]
            assert any(any(str(v) in s for v in args.values() if isinstance(v, str)) for s in spans), teacher


def test_every_span_grounded_distinct_unpadded_and_varied(run_cli, run_1k: Path) -> None:
    recs = records(run_cli, run_1k)
    spans_seen = 0
    for r in recs:
        spans = INT.findall(r["teacher_text"])
        context = "".join(m.group(1) for m in PASSAGE_SECTION.finditer(r["prompt"]))
        context += "".join(res for _, res in CALL_THEN_RESULT.findall(r["teacher_text"]))
        for span in spans:
            assert numbers(span) <= numbers(context), (span, r["sample_id"])
            assert not span.endswith("as reported")
        assert len({norm(s) for s in spans}) == len(spans)
        spans_seen += len(spans)
    assert spans_seen > 1200
    templates = {r["question_template"] for r in recs if ":" in r["question_template"]}  # eligible items
    phrasings = {p for t in templates for p in t.split(":", 1)[1].split("+")}
    assert len(phrasings) >= 40 and len(templates) >= 200
    tools = {
        orjson.loads(c)["name"] for r in recs for c in re.findall(r"<tool_call>(.*?)</tool_call>", r["teacher_text"])
    }
    assert len(tools) == 10


def test_need_phrasings_share_no_word_with_any_tool_result() -> None:
    """A need's own words (not its arguments) never occur in a result of any tool: an answer is about
    the request's subject, not about a word that a neighbouring result happens to use. A rare clash
    fails the relevance gate at 10k items; this finds it from the pools (read as data) at once."""
    from datamill.recipes.contextual import pools

    result_words: set[str] = set()
    for values in (pools.CONDITIONS, pools.FLIGHT_STATES, pools.PARCEL_STATES, pools.CURRENCIES):
        for v in values:
            result_words |= set(re.findall(r"[a-z0-9]+", v.lower()))
    keys = ["temp_c", "condition", "precip_mm", "price", "change_pct", "population", "census_year", "rate",
            "result", "status", "gate", "delay_min", "aqi", "pm25", "eta", "local_time", "utc_offset", "km",
            "minutes", "sunrise", "sunset", "city", "date", "symbol", "amount", "from", "to", "flight",
            "tracking_id", "origin", "destination"]  # fmt: skip
    for k in keys:
        result_words |= set(k.split("_"))
    # function words, and "flight", which the flight answers repeat
    allowed = {"in", "on", "at", "for", "the", "a", "an", "of", "is", "it", "to", "from", "out", "by", "one", "flight"}
    for name, spec in pools.TOOLS.items():
        for need, _ in spec["needs"]:
            words = set(re.findall(r"[a-z0-9]+", re.sub(r"\{[a-z_]+\}", " ", need).lower()))
            assert not (words & result_words) - allowed, (name, need, words & result_words)
