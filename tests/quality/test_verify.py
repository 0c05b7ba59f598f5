"""verify: report fields, duplicate sample_ids, gates and their severities, metrics."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest

from datamill.quality import metrics as m
from helpers import reseal

RECIPE = """
name: q
seed: 5
size: 90
columns:
  level: {sampler: categorical, values: [easy, medium, hard]}
  style: {sampler: conditional, on: level, table: {easy: {plain: 1}, medium: {plain: 1, rich: 1}, hard: {rich: 1}}}
  text: {template: "{{ level }} question number {{ slot }} about {{ style }} things."}
quotas:
  level: {easy: 1, medium: 1, hard: 2}
gates:
  - {metric: tokens.text.p90, max: 1000, severity: fail}
output: {part_size: 30}
"""


@pytest.fixture
def run_dir(run_cli, tmp_path: Path) -> Path:
    recipe = tmp_path / "q.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "run"
    assert run_cli("run", str(recipe), "--out", str(out)).returncode == 0
    return out


def test_verify_report_has_header_summary_and_quotas(run_cli, run_dir: Path) -> None:
    res = run_cli("verify", str(run_dir))
    assert res.returncode == 0, res.stdout + res.stderr
    report = orjson.loads((run_dir / "reports" / "verify.json").read_bytes())
    h, s = report["header"], report["summary"]
    assert h["report_version"] == 1 and h["num_items"] == 90
    assert h["recipe"]["name"] == "q" and len(h["recipe"]["hash"]) == 16
    assert h["categories"]["level"] == {"easy": 23, "medium": 22, "hard": 45}  # 90 * (1/4, 1/4, 1/2), largest remainder
    assert set(h["categories"]["style"]) == {"plain", "rich"}
    assert s["histograms"]["level"] == h["categories"]["level"]
    assert all(q["ok"] for q in s["quota"]) and sum(q["actual"] for q in s["quota"]) == 90
    text = s["fields"]["text"]
    assert set(text["chars"]) == {"p10", "p50", "p90", "max", "mean"} and set(text["tokens"]) == set(text["chars"])
    assert 0 < text["tokens"]["p10"] <= text["tokens"]["p50"] <= text["tokens"]["p90"] <= text["tokens"]["max"]
    assert s["duplicate_sample_ids"] == [] and s["time_per_100_items"] > 0
    assert [g["metric"] for g in s["gates"]] == ["tokens.text.p90"] and s["gates"][0]["passed"]
    assert s["metrics"]["mutual_information.level.style"] > 0.5  # style is a function of level, mostly


def test_planted_duplicate_sample_id_exits_1_and_is_named(run_cli, run_dir: Path, tmp_path: Path) -> None:
    part = sorted((run_dir / "parts").glob("*.jsonl"))[1]
    lines = part.read_bytes().splitlines(keepends=True)
    part.write_bytes(b"".join([*lines, lines[3]]))
    reseal(part)  # a duplicate committed as such (a writer's bug), not disk damage
    dup = orjson.loads(lines[3])["sample_id"]
    res = run_cli("verify", str(run_dir))
    assert res.returncode == 1
    assert f"duplicate_sample_ids: 1 ({dup})" in res.stdout
    report = orjson.loads((run_dir / "reports" / "verify.json").read_bytes())
    assert report["summary"]["duplicate_sample_ids"] == [dup] and report["summary"]["passed"] is False


def test_warn_gate_is_reported_but_does_not_fail(run_cli, run_dir: Path, tmp_path: Path) -> None:
    gates = tmp_path / "gates.yaml"
    gates.write_text("gates:\n  - {metric: tokens.text.p50, max: 1, severity: warn}\n")
    res = run_cli("verify", str(run_dir), "--gates", str(gates), "--report", str(tmp_path / "r.json"))
    assert res.returncode == 0
    assert "WARN tokens.text.p50" in res.stdout
    report = orjson.loads((tmp_path / "r.json").read_bytes())
    warn = next(g for g in report["summary"]["gates"] if g["metric"] == "tokens.text.p50")
    assert warn["passed"] is False and warn["severity"] == "warn"
    # The same bound at fail severity fails the run.
    gates.write_text("gates:\n  - {metric: tokens.text.p50, max: 1, severity: fail}\n")
    assert run_cli("verify", str(run_dir), "--gates", str(gates)).returncode == 1


def test_verify_a_merged_file_and_bad_inputs(run_cli, run_dir: Path, tmp_path: Path) -> None:
    merged = tmp_path / "all.jsonl"
    assert run_cli("merge", str(run_dir), "--out", str(merged)).returncode == 0
    res = run_cli("verify", str(merged), "--report", str(tmp_path / "r.json"), "--perf-budget-sec-per-100", "1e-9")
    assert res.returncode == 0  # the perf budget is a warn gate (seed 000's policy)
    assert "WARN time_per_100_items" in res.stdout
    assert orjson.loads((tmp_path / "r.json").read_bytes())["header"]["num_items"] == 90
    assert run_cli("verify", str(tmp_path / "nope.jsonl")).returncode == 2
    bad = tmp_path / "g.yaml"
    bad.write_text("- {metric: x}\n")
    assert run_cli("verify", str(merged), "--gates", str(bad)).returncode == 2
    assert run_cli("verify", str(merged), "--tokenizer", str(tmp_path)).returncode == 2


def test_metrics_against_hand_computed_values() -> None:
    same = ["The cat sat."] * 4
    assert m.opening_entropy(same) == 0.0
    assert m.opening_entropy(["a x", "b x", "c x", "d x"]) == pytest.approx(2.0)
    # "a b c a b c": trigrams abc, bca, cab, abc -> one repeat of four
    assert m.trigram_repetition(["a b c a b c"]) == pytest.approx(0.25)
    assert m.lexical_diversity(["a a b"]) == pytest.approx(2 / 3)
    assert m.starter_variety(["One. Two. One again."]) == pytest.approx(2 / 3)
    assert m.uniqueness(["x", "x", "y", "z"]) == pytest.approx(0.75)
    assert m.top_k_share(["x", "x", "y", "z"], 1) == pytest.approx(0.5)
    assert m.mutual_information(["a", "a", "b", "b"], ["x", "x", "y", "y"]) == pytest.approx(1.0)
    assert m.mutual_information(["a", "b", "a", "b"], ["x", "x", "y", "y"]) == pytest.approx(0.0)
    from collections import Counter

    assert m.category_balance(Counter({"a": 3, "b": 1}), {"a": 1, "b": 1}) == pytest.approx(0.25)
    assert m.collapse_level("opening_entropy", 2.5) == "healthy"
    assert m.collapse_level("opening_entropy", 1.7) == "warning"
    assert m.collapse_level("opening_entropy", 1.0) == "critical"
    assert m.collapse_level("trigram_repetition", 0.05) == "healthy"
    assert math.isclose(m.entropy(Counter({"a": 1, "b": 1})), 1.0)


def test_near_duplicate_rate_and_text_metrics_in_the_report(run_cli, tmp_path: Path) -> None:
    base = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
    texts = [base, base + " seventeen", base.replace("one", "uno")]
    texts += [f"entirely separate words {i} " + " ".join(f"t{i}x{k}" for k in range(12)) for i in range(7)]
    data = tmp_path / "d.jsonl"
    data.write_bytes(
        b"".join(orjson.dumps({"sample_id": f"x:0:{i}:0", "text": t}) + b"\n" for i, t in enumerate(texts))
    )
    assert run_cli("verify", str(data), "--report", str(tmp_path / "r.json"), "--no-tokens").returncode == 0
    metrics = orjson.loads((tmp_path / "r.json").read_bytes())["summary"]["metrics"]
    assert metrics["near_duplicate_rate.text"] == pytest.approx(0.2)  # two of ten near the first
    assert metrics["uniqueness.text"] == 1.0
    for key in ("opening_entropy.text", "trigram_repetition.text", "lexical_diversity.text", "starter_variety.text"):
        assert metrics[key] >= 0.0


def test_the_text_sample_is_uniform_and_fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    """verify's reservoir (Algorithm L): every item of a stream equally likely to be sampled, and
    the same stream gives the same sample."""
    import importlib
    import random

    v = importlib.import_module("datamill.quality.verify")  # the module (the package exports its function)
    monkeypatch.setattr(v, "SAMPLE", 10)
    n, trials = 200, 3000
    hits = [0] * n
    for t in range(trials):
        f, rng = v._Field(), random.Random(t)
        for i in range(n):
            f.seen += 1
            f.offer(str(i), rng)
        assert len(f.sample) == 10 and len(set(f.sample)) == 10
        for x in f.sample:
            hits[int(x)] += 1
    expected = trials * 10 / n  # 150
    assert all(abs(h - expected) < 5 * expected**0.5 for h in hits), (min(hits), max(hits))
    # First and last tenths of the stream are sampled alike (no drift toward either end).
    assert abs(sum(hits[:20]) - sum(hits[-20:])) < 0.1 * sum(hits[:20])

    def sample(seed: int) -> list[str]:
        f, rng = v._Field(), random.Random(seed)
        for i in range(n):
            f.seen += 1
            f.offer(str(i), rng)
        return f.sample

    assert sample(5) == sample(5)
