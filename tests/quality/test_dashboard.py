"""Dashboard gates in verify: each metric against an independent computation, its bands, planted
defects caught each by its own gate, a clean dataset passing all, the CLI lines and the config
errors. Records come from persona_data (procedural persona-like text with known properties)."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import persona_data as pd
import pytest
from pydantic import ValidationError

from datamill.errors import InputError
from datamill.quality import load_gates, verify
from datamill.recipe.model import GateSpec

N = 2000  # <= every default sample size, so the sampled metrics read every record
WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")  # the test's own tokenizer (the texts are ASCII)

GATES = """
gates:
  - {dashboard: opening_entropy, field: opening_move}
  - {dashboard: opening_entropy, field: persona, words: 2}
  - {dashboard: trigram_repetition, field: [persona, hobbies]}
  - {dashboard: mattr, field: [persona, hobbies]}
  - {dashboard: starter_variety, field: persona}
  - {dashboard: anchor_share, field: anchors}
  - {dashboard: rare_anchor_compliance, field: anchors}
  - {dashboard: anchor_region_mi, field: anchors, by: region}
  - {dashboard: near_dup_uniqueness, field: persona}
  - {dashboard: repair_rate}
  - {dashboard: pollyanna, field: persona}
  - {safety: stereotypes, field: [persona, hobbies]}
  - {safety: determinism, protected: [ethnicity], attributes: [occupation], min_group: 30}
  - {safety: fairness, attribute: region, table: tables/regions.csv}
  - {safety: fairness, attribute: ethnicity, table: tables/ethnicity_by_region.csv, weight: share, given: [region],
     min_expected: 100}
"""


@pytest.fixture(scope="module")
def gates_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gates")
    pd.write_tables(folder / "tables")
    path = folder / "gates.yaml"
    path.write_text(GATES)
    return path


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    recs = pd.records(N)
    return pd.write(tmp_path_factory.mktemp("clean") / "clean.jsonl", recs), recs


def run(path: Path, gates: Path | list[GateSpec]) -> dict[str, Any]:
    specs = load_gates(gates) if isinstance(gates, Path) else gates
    return verify(path, count_tokens=False, gates=specs)["summary"]


def row(summary: dict[str, Any], metric: str) -> dict[str, Any]:
    rows = [r for r in summary["dashboard"] + summary["safety"] if r["metric"] == metric]
    assert len(rows) == 1, [r["metric"] for r in summary["dashboard"] + summary["safety"]]
    return rows[0]


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def bits(counts: Counter[Any]) -> float:
    n = sum(counts.values())
    return -sum(c / n * math.log2(c / n) for c in counts.values())


# -- a clean dataset ------------------------------------------------------------------------------


def test_clean_dataset_passes_every_dashboard_and_safety_gate(clean, gates_file: Path) -> None:
    summary = run(clean[0], gates_file)
    board = summary["dashboard"] + summary["safety"]
    assert len(board) == 17  # one row per field of each gate
    assert all(r["passed"] for r in board), [
        (r["metric"], r["value"], r["band"], r["reason"]) for r in board if not r["passed"]
    ]
    assert {r["band"] for r in board} == {"healthy", "n/a"}
    assert [r["metric"] for r in board if r["band"] == "n/a"] == ["dashboard.repair_rate"]  # a file has no attempt log
    assert summary["passed"]
    # Every row is in the gate list and in the flat metrics (so a metric gate or a golden set can use it).
    gates = {g["metric"]: g for g in summary["gates"]}
    for r in board:
        assert gates[r["metric"]]["band"] == r["band"]
        if r["value"] is not None:
            assert summary["metrics"][r["metric"]] == r["value"]


def test_metrics_match_an_independent_computation(clean, gates_file: Path) -> None:
    path, recs = clean
    s = run(path, gates_file)
    assert row(s, "dashboard.opening_entropy.opening_move")["value"] == round(
        bits(Counter(r["opening_move"] for r in recs)), 4
    )
    openings = Counter(" ".join(words(r["persona"])[:2]) for r in recs)
    assert row(s, "dashboard.opening_entropy.persona")["value"] == round(bits(openings), 4)

    for field in ("persona", "hobbies"):
        grams = [list(zip(w, w[1:], w[2:], strict=False)) for w in (words(r[field]) for r in recs)]
        df = Counter(t for g in grams for t in set(g))
        common = {t for t, c in df.items() if c > 0.05 * N}
        share = sum(t in common for g in grams for t in g) / sum(len(g) for g in grams)
        assert row(s, f"dashboard.trigram_repetition.{field}")["value"] == round(share, 4)

        def mattr(w: list[str]) -> float:
            if len(w) <= 50:
                return len(set(w)) / len(w)
            return sum(len(set(w[i : i + 50])) / 50 for i in range(len(w) - 49)) / (len(w) - 49)

        expected = sum(mattr(words(r[field])) for r in recs) / N
        assert row(s, f"dashboard.mattr.{field}")["value"] == pytest.approx(expected, abs=1e-4)

    starters: list[str] = []
    for r in recs:  # records in order until 1,000 sentences
        if len(starters) >= 1000:
            break
        starters += [" ".join(words(x)[:2]) for x in re.split(r"(?<=[.!?])\s+", r["persona"]) if words(x)]
    assert row(s, "dashboard.starter_variety.persona")["value"] == round(len(set(starters)) / len(starters), 4)

    per_anchor = Counter(a for r in recs for a in set(r["anchors"]))
    share = row(s, "dashboard.anchor_share.anchors")
    _, top_count = per_anchor.most_common(1)[0]
    assert share["value"] == round(top_count / N, 4)
    assert share["details"]["top"][0]["share"] == round(top_count / N, 4) and len(share["details"]["top"]) == 50

    ranked = sorted(per_anchor.items(), key=lambda kv: (-kv[1], kv[0]))
    common_anchors = {a for a, _ in ranked[:50]}
    compliant = sum(1 for r in recs if set(r["anchors"]) - common_anchors)
    assert row(s, "dashboard.rare_anchor_compliance.anchors")["value"] == round(compliant / N, 4)

    pairs = Counter((a, r["region"]) for r in recs for a in r["anchors"])
    by_a, by_b, total = Counter(), Counter(), sum(pairs.values())
    for (a, b), c in pairs.items():
        by_a[a] += c
        by_b[b] += c
    mi = sum(c / total * math.log2(c * total / (by_a[a] * by_b[b])) for (a, b), c in pairs.items())
    assert row(s, "dashboard.anchor_region_mi.anchors.region")["value"] == round(mi / bits(by_b), 4) == 1.0

    assert row(s, "dashboard.near_dup_uniqueness.persona")["value"] == 1.0
    assert row(s, "dashboard.pollyanna.persona")["value"] == 0.0  # one mood word in ~45: no record near 0.05


def test_region_mi_drops_when_anchors_ignore_the_region(tmp_path: Path) -> None:
    recs = pd.records(N)
    pool = sorted({a for r in recs for a in r["anchors"]})
    for i, r in enumerate(recs):  # anchors drawn without regard to the region
        r["anchors"] = [pool[(i * 7) % len(pool)], pool[(i * 13 + 5) % len(pool)]]
    s = run(
        pd.write(tmp_path / "a.jsonl", recs), [GateSpec(dashboard="anchor_region_mi", field="anchors", by="region")]
    )
    r = row(s, "dashboard.anchor_region_mi.anchors.region")
    assert r["value"] < 0.05 and r["band"] == "critical" and r["examples"][0]["sample_ids"]


def test_pollyanna_counts_relentlessly_positive_narratives(tmp_path: Path) -> None:
    glowing = "She is happy and proud, loves her wonderful garden and is grateful for every bright day."
    balanced = "He is tired after the shift and worried about the loan, but he likes the quiet road home."
    plain = "Ana repairs wooden chairs in the garage before lunch."
    recs = [
        {"sample_id": f"p:0:{i}:0", "persona": glowing if i % 10 < 8 else balanced if i % 10 == 8 else plain}
        for i in range(500)
    ]
    # Independently: glowing has 6 positive words of 16 (happy proud loves wonderful grateful bright) and none negative.
    assert len(words(glowing)) == 16
    s = run(pd.write(tmp_path / "p.jsonl", recs), [GateSpec(dashboard="pollyanna", field="persona")])
    r = row(s, "dashboard.pollyanna.persona")
    assert r["value"] == 0.8 and r["band"] == "warning" and r["severity"] == "warn"  # 0.7-0.85: a warning
    assert r["examples"][0]["score"] == round(6 / 16, 4)
    assert set(r["examples"][0]["positive_words"]) == {"happy", "proud", "loves", "wonderful", "grateful", "bright"}
    # The threshold moves with the option; Romanian words count through the Romanian lexicon.
    ro = [
        {
            "sample_id": f"r:0:{i}:0",
            "persona": "Maria este fericită, mândră și recunoscătoare pentru familia ei minunată.",
        }
        for i in range(10)
    ]
    s = run(pd.write(tmp_path / "ro.jsonl", ro), [GateSpec(dashboard="pollyanna", field="persona", languages=["ro"])])
    assert row(s, "dashboard.pollyanna.persona")["value"] == 1.0
    assert row(s, "dashboard.pollyanna.persona")["band"] == "critical"
    s = run(pd.write(tmp_path / "ro2.jsonl", ro), [GateSpec(dashboard="pollyanna", field="persona", languages=["en"])])
    assert row(s, "dashboard.pollyanna.persona")["value"] == 0.0  # the English lexicon alone knows none of it


# -- planted defects ------------------------------------------------------------------------------

# defect -> (the gate that must catch it, its band)
PLANTED = {
    "stereotypes": ("safety.stereotypes", "critical"),
    "determinism": ("safety.determinism", "critical"),
    "fairness": ("safety.fairness.region", "critical"),
    "same_opening": ("dashboard.opening_entropy.persona", "critical"),
    "anchor": ("dashboard.anchor_share.anchors", "critical"),
    "near_dups": ("dashboard.near_dup_uniqueness.persona", "warning"),
}


@pytest.mark.parametrize("defect", list(PLANTED))
def test_planted_defect_is_caught_by_its_own_gate(defect: str, gates_file: Path, tmp_path: Path) -> None:
    s = run(pd.write(tmp_path / f"{defect}.jsonl", pd.records(N, defect)), gates_file)
    metric, band = PLANTED[defect]
    r = row(s, metric)
    assert r["band"] == band and not r["passed"], r
    assert r["examples"], r
    caught = {g["metric"] for g in s["gates"] if not g["passed"]}
    # Nothing else fails, but the trigram repetition a shared opening phrase adds.
    assert caught - {"dashboard.trigram_repetition.persona"} == {metric}
    assert s["passed"] is (band == "warning")  # a warning warns; a critical band fails verify


def test_planted_defects_name_what_they_found(gates_file: Path, tmp_path: Path) -> None:
    anchor = row(
        run(pd.write(tmp_path / "a.jsonl", pd.records(N, "anchor")), gates_file), "dashboard.anchor_share.anchors"
    )
    assert "'Capital park 0'" in anchor["reason"] and anchor["examples"][0]["anchor"] == "Capital park 0"
    assert anchor["value"] == pytest.approx(0.4, abs=0.03) and anchor["details"]["over_cap"] == 1
    recs = pd.records(N, "near_dups")
    dup = row(run(pd.write(tmp_path / "d.jsonl", recs), gates_file), "dashboard.near_dup_uniqueness.persona")
    assert dup["value"] == 1 - 60 / N  # 3% planted, each a near copy of the record before it
    by_id = {r["sample_id"]: r for r in recs}
    for ex in dup["examples"]:
        a, b = by_id[ex["sample_id"]]["persona"].split(), by_id[ex["near_duplicate_of"]]["persona"].split()
        assert a[:-1] == b[:-1] and a[-1] != b[-1]
    opening = row(
        run(pd.write(tmp_path / "o.jsonl", pd.records(N, "same_opening")), gates_file),
        "dashboard.opening_entropy.persona",
    )
    assert opening["value"] == 0.0 and opening["examples"][0]["value"] == "in the"


# -- repair rate ----------------------------------------------------------------------------------


def test_repair_rate_reads_the_run_attempt_log(run_cli, tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        "name: rr\nsize: 20\ncolumns:\n  x: {sampler: integer, low: 1, high: 9}\n"
        "gates:\n  - {dashboard: repair_rate, warn: 0.05, critical: 0.5}\n"
    )
    out = tmp_path / "run"
    assert run_cli("run", str(tmp_path / "r.yaml"), "--out", str(out)).returncode == 0
    statuses = ["ok"] * 14 + ["repaired"] * 4 + ["cached"] * 5 + ["retry", "failed"]
    rows = [
        {
            "ts": "2026-01-01T00:00:00Z",
            "slot": i,
            "column": "answer",
            "attempt": 1,
            "status": st,
            "repairs": ["trailing_comma"] if st == "repaired" else [],
        }
        for i, st in enumerate(statuses)
    ]
    (out / "logs").mkdir(exist_ok=True)
    (out / "logs" / "attempts.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    res = run_cli("verify", str(out), "--no-tokens")
    assert res.returncode == 0, res.stdout + res.stderr  # 4 / 18 = 0.222: warning (0.05 - 0.5)
    assert "WARN dashboard.repair_rate = 0.2222 [warning]" in res.stdout
    r = row(orjson.loads((out / "reports" / "verify.json").read_bytes())["summary"], "dashboard.repair_rate")
    assert r["details"]["answered"] == 18 and r["details"]["repairs"] == {"trailing_comma": 4}
    assert [e["slot"] for e in r["examples"]] == [14, 15, 16, 17]


# -- samples, bands, output -----------------------------------------------------------------------


def test_sampled_metrics_read_a_fixed_deterministic_sample(tmp_path: Path) -> None:
    path = pd.write(tmp_path / "big.jsonl", pd.records(3000))
    gates = [
        GateSpec(dashboard="mattr", field="persona", sample=500),
        GateSpec(dashboard="near_dup_uniqueness", field="persona", sample=700),
    ]
    a, b = run(path, gates), run(path, gates)
    assert a["dashboard"] == b["dashboard"]
    assert row(a, "dashboard.mattr.persona")["sampled"] == 500
    assert row(a, "dashboard.near_dup_uniqueness.persona")["sampled"] == 700


def test_bands_follow_warn_and_critical(clean) -> None:
    path = clean[0]
    value = row(run(path, [GateSpec(dashboard="mattr", field="persona")]), "dashboard.mattr.persona")["value"]
    cases = [
        ({"warn": value - 0.1, "critical": value - 0.2}, "healthy", True, "fail"),
        ({"warn": value + 0.1, "critical": value - 0.1}, "warning", False, "warn"),
        ({"warn": value + 0.2, "critical": value + 0.1}, "critical", False, "fail"),
        ({"warn": value + 0.2, "critical": value + 0.1, "severity": "warn"}, "critical", False, "warn"),
    ]
    for bounds, band, passed, severity in cases:
        g = run(path, [GateSpec(dashboard="mattr", field="persona", **bounds)])["gates"][0]
        assert (g["band"], g["passed"], g["severity"]) == (band, passed, severity), bounds
    # A critical bound alone moves the default warning band with it (lower is better for anchor shares).
    r = row(
        run(path, [GateSpec(dashboard="anchor_share", field="anchors", max_share=0.01)]),
        "dashboard.anchor_share.anchors",
    )
    assert r["critical"] == 0.01 and r["warn"] == pytest.approx(0.008) and r["band"] == "critical"


def test_cli_prints_each_gate_with_its_band_and_exit_status(run_cli, gates_file: Path, tmp_path: Path) -> None:
    path = pd.write(tmp_path / "s.jsonl", pd.records(N, "stereotypes"))
    res = run_cli("verify", str(path), "--gates", str(gates_file), "--no-tokens", "--report", str(tmp_path / "r.json"))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "PASS dashboard.opening_entropy.opening_move = " in res.stdout
    assert "(healthy > 2, warning 1.5 – 2, critical < 1.5)" in res.stdout
    line = next(x for x in res.stdout.splitlines() if x.startswith("FAIL safety.stereotypes"))
    assert "= 0.05 [critical]" in line and "100 of 2,000 records make a stereotype claim, e.g. personas:7:0:0" in line
    res = run_cli(
        "verify",
        str(pd.write(tmp_path / "d.jsonl", pd.records(N, "near_dups"))),
        "--gates",
        str(gates_file),
        "--no-tokens",
        "--report",
        str(tmp_path / "r2.json"),
    )
    assert res.returncode == 0 and "WARN dashboard.near_dup_uniqueness.persona = 0.97 [warning]" in res.stdout


def test_a_gate_on_a_missing_field_fails_rather_than_passing_on_nothing(clean) -> None:
    s = run(clean[0], [GateSpec(dashboard="mattr", field="no_such_field")])
    g = s["gates"][0]
    assert g["band"] == "n/a" and not g["passed"] and "no record has a text in field 'no_such_field'" in g["reason"]


# -- bad configurations ---------------------------------------------------------------------------

BAD = [
    ({"dashboard": "mattr"}, "expected field:"),
    ({"dashboard": "mattr", "field": "x", "by": "region"}, "takes no by:"),
    ({"dashboard": "opening_entropy", "field": "x", "warn": 1.0, "critical": 2.0}, "expected critical (2) <= warn (1)"),
    ({"dashboard": "pollyanna", "field": "x", "warn": 0.9, "critical": 0.8}, "expected warn (0.9) <= critical (0.8)"),
    ({"dashboard": "anchor_share", "field": ["a", "b"]}, "expected one field, got 2"),
    (
        {"dashboard": "anchor_share", "field": "a", "max_share": 0.1, "critical": 0.2},
        "give one of max_share and critical",
    ),
    ({"dashboard": "anchor_region_mi", "field": "anchors"}, "expected by:"),
    ({"dashboard": "mattr", "field": "x", "metric": "m"}, "takes no metric:"),
    ({"dashboard": "mattr", "field": "x", "safety": "fairness"}, "not both"),
    ({"dashboard": "trendiness", "field": "x"}, "opening_entropy"),
    ({"metric": "num_items", "min": 1, "window": 5}, "only dashboard and safety gates take it"),
    ({"safety": "stereotypes"}, "expected field:"),
    ({"safety": "stereotypes", "field": "x", "languages": ["de"]}, "'en' or 'ro'"),
    ({"safety": "determinism", "protected": ["ethnicity"]}, "expected attributes:"),
    ({"safety": "fairness", "attribute": "region"}, "expected table:"),
    ({"safety": "fairness", "attribute": "region", "table": "t.csv", "warn": 0.1}, "takes no warn:"),
    ({"dashboard": "mattr", "field": "x", "window": 1}, "greater than or equal to 2"),
]


@pytest.mark.parametrize(("gate", "words_"), BAD, ids=[f"bad-{i}" for i in range(len(BAD))])
def test_bad_gate_configurations_are_refused(gate: dict[str, Any], words_: str) -> None:
    with pytest.raises(ValidationError) as exc:
        GateSpec.model_validate(gate)
    assert words_ in str(exc.value), str(exc.value)


def test_bad_gates_file_is_one_line_naming_the_gate(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("gates:\n  - {dashboard: mattr, field: x}\n  - {dashboard: mattr, field: x, by: y}\n")
    with pytest.raises(InputError, match=r"--gates: .*g\.yaml: gates\[1\]: dashboard mattr: takes no by:"):
        load_gates(path)


def test_a_gate_dumped_into_a_manifest_loads_back_the_same() -> None:
    for gate in [
        {"dashboard": "anchor_share", "field": "anchors", "max_share": 0.1},
        {"safety": "fairness", "attribute": "region", "table": "t.csv", "given": ["age"]},
    ]:
        spec = GateSpec.model_validate(gate)
        assert GateSpec.model_validate(spec.model_dump(mode="json")) == spec
