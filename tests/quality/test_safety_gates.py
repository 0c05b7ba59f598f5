"""Safety gates in verify: stereotype claims (English and Romanian packs, a user file), protected
attribute determinism, distribution fairness against a table (marginal and conditional); each
violation named with example sample_ids; paths resolved against the recipe's folder."""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import persona_data as pd
import pytest

from datamill.errors import InputError
from datamill.quality import verify
from datamill.recipe.model import GateSpec


def write(path: Path, recs: list[dict[str, Any]]) -> Path:
    return pd.write(path, [{"sample_id": f"s:0:{i}:0", **r} for i, r in enumerate(recs)])


def board(path: Path, *gates: GateSpec) -> list[dict[str, Any]]:
    return verify(path, count_tokens=False, gates=list(gates))["summary"]["safety"]


# -- stereotypes ----------------------------------------------------------------------------------

CLAIMS = [  # (text, language, category): each must be flagged
    ("Everyone knows Romanians are lazy.", "en", "ethnicity"),
    ("Honestly, women are all too emotional to lead.", "en", "gender"),
    ("All Muslims are terrorists, he said.", "en", "religion"),
    ("Villagers are naturally stupid.", "en", "region"),
    ("Gypsies can't be trusted with money.", "en", "ethnicity"),
    ("Românii sunt leneși.", "ro", "ethnicity"),
    ("Femeile sunt slabe.", "ro", "gender"),
    ("Sătenii sunt proști, zice el.", "ro", "region"),
    ("Musulmanii sunt teroriști.", "ro", "religion"),
    ("ROMANII SUNT LENESI", "ro", "ethnicity"),  # no diacritics, capitals
    ("Ţiganii sunt hoţi.", "ro", "ethnicity"),  # cedilla forms of ț
    ("Toți țiganii sunt mereu murdari.", "ro", "ethnicity"),
    ("Țiganii nu sunt de încredere.", "ro", "ethnicity"),
]
HARMLESS = [  # mentions of groups, traits and copulas that are not a claim about a group
    "Romanians are welcoming hosts, and the market is busy.",
    "The women of the choir are rehearsing a carol.",
    "He is lazy on Sundays and proud of it.",
    "Her brothers are weaker at chess than she is.",
    "Românii din sat sunt ospitalieri.",
    "Femeile din cor cântă frumos.",
    "Villagers are tired after the harvest.",
    "The report on migrants is long.",
]


def test_stereotype_claims_are_found_in_english_and_romanian(tmp_path: Path) -> None:
    recs = [{"persona": f"Ana repairs chairs. {text}", "hobbies": "Chess."} for text, _, _ in CLAIMS]
    recs += [{"persona": text, "hobbies": "Reading."} for text in HARMLESS]
    path = write(tmp_path / "s.jsonl", recs)
    (row,) = board(path, GateSpec(safety="stereotypes", field=["persona", "hobbies"]))
    assert row["value"] == round(len(CLAIMS) / len(recs), 6) and row["band"] == "critical" and not row["passed"]
    assert row["details"]["records_flagged"] == len(CLAIMS)
    assert row["details"]["by_language"] == dict(Counter(lang for _, lang, _ in CLAIMS))
    assert row["details"]["by_category"] == dict(Counter(cat for _, _, cat in CLAIMS))
    ex = row["examples"][0]
    assert ex["sample_id"] == "s:0:0:0" and ex["field"] == "persona" and ex["match"] == "Romanians are lazy"
    assert ex["text"] == "Everyone knows Romanians are lazy." and ex["category"] == "ethnicity"
    assert [e["sample_id"] for e in row["examples"]] == [f"s:0:{i}:0" for i in range(5)]
    ro = next(e for e in board(path, GateSpec(safety="stereotypes", field="persona", languages=["ro"]))[0]["examples"])
    assert ro["match"] == "Românii sunt leneși" and ro["language"] == "ro"  # the original text, diacritics kept


def test_each_language_pack_alone(tmp_path: Path) -> None:
    path = write(tmp_path / "s.jsonl", [{"persona": text} for text, _, _ in CLAIMS])
    for lang in ("en", "ro"):
        (row,) = board(path, GateSpec(safety="stereotypes", field="persona", languages=[lang]))
        assert row["details"]["records_flagged"] == sum(1 for _, x, _ in CLAIMS if x == lang)


def test_a_user_pattern_file_extends_the_packs(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text(
        "language: en\ngroups:\n  profession: [lawyers, bankers]\ntraits: [sharks, bloodsuckers]\n"
        "patterns:\n  - '{group} are (?:all )?{trait}'\n"
    )
    recs = [
        {"persona": "Lawyers are all sharks."},
        {"persona": "Bankers are bloodsuckers."},
        {"persona": "Women are weak."},
        {"persona": "Lawyers are busy."},
    ]
    path = write(tmp_path / "u.jsonl", recs)
    (plain,) = board(path, GateSpec(safety="stereotypes", field="persona"))
    assert plain["details"]["records_flagged"] == 1
    (row,) = board(path, GateSpec(safety="stereotypes", field="persona", patterns=str(tmp_path / "mine.yaml")))
    assert row["details"]["records_flagged"] == 3 and row["details"]["by_category"] == {"profession": 2, "gender": 1}
    # A pattern file that does not load is refused before any work.
    (tmp_path / "bad.yaml").write_text("language: en\ngroups: {g: [x]}\npatterns: ['{group} (unclosed']\n")
    with pytest.raises(InputError, match=r"gates\[0\] \(safety stereotypes\): patterns: .*does not compile"):
        board(path, GateSpec(safety="stereotypes", field="persona", patterns=str(tmp_path / "bad.yaml")))
    (tmp_path / "nog.yaml").write_text("language: en\ngroups: {g: [x]}\npatterns: ['are {trait}']\ntraits: [y]\n")
    with pytest.raises(InputError, match=r"expected \{group\} in the pattern"):
        board(path, GateSpec(safety="stereotypes", field="persona", patterns=str(tmp_path / "nog.yaml")))


def test_clean_persona_text_has_no_stereotype(tmp_path: Path) -> None:
    path = pd.write(tmp_path / "c.jsonl", pd.records(3000))
    (row,) = board(path, GateSpec(safety="stereotypes", field=["persona", "hobbies"], max_share=0))
    assert row["value"] == 0 and row["band"] == "healthy" and row["passed"] and row["examples"] == []


# -- determinism ----------------------------------------------------------------------------------


def test_determinism_names_group_attribute_value_and_share(tmp_path: Path) -> None:
    recs = []
    for i in range(100):  # gagauz: 60% farmers (a violation); moldovan: balanced
        recs.append(
            {
                "ethnicity": "gagauz",
                "religion": "orthodox",
                "occupation": "farmer" if i < 60 else f"job{i % 8}",
                "education": ["secondary", "university"][i % 2],
            }
        )
    for i in range(300):
        recs.append(
            {
                "ethnicity": "moldovan",
                "religion": ["orthodox", "catholic"][i % 2],
                "occupation": f"job{i % 8}",
                "education": ["secondary", "university", "vocational"][i % 3],
            }
        )
    for _ in range(20):  # too small a group to judge: skipped, and said
        recs.append({"ethnicity": "roma", "religion": "baptist", "occupation": "musician", "education": "secondary"})
    path = write(tmp_path / "d.jsonl", recs)
    (row,) = board(
        path,
        GateSpec(safety="determinism", protected=["ethnicity", "religion"], attributes=["occupation", "education"]),
    )
    assert row["band"] == "critical" and not row["passed"]
    (v,) = row["details"]["violations"]
    assert (v["protected"], v["group"], v["attribute"], v["value"]) == ("ethnicity", "gagauz", "occupation", "farmer")
    assert v["share"] == 0.6 and v["count"] == 60 and v["group_size"] == 100
    assert v["sample_ids"] == ["s:0:0:0", "s:0:1:0", "s:0:2:0"]
    assert row["value"] == 0.6  # the largest share of any value within a tested group
    skipped = {(s["protected"], s["group"]) for s in row["details"]["skipped"]}
    assert skipped == {("ethnicity", "roma"), ("religion", "baptist")}
    assert "ethnicity=gagauz: occupation='farmer' in 60.0% of the group (60 of 100; max 0.5)" in row["reason"]
    assert "2 groups under 30 records not tested" in row["reason"]
    # The same data under a looser limit passes, still saying what it skipped.
    (row,) = board(
        path, GateSpec(safety="determinism", protected=["ethnicity"], attributes=["occupation"], max_share=0.65)
    )
    assert row["passed"] and row["band"] == "healthy" and "not tested" in row["reason"]


# -- fairness -------------------------------------------------------------------------------------


def table(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_fairness_against_a_marginal_table(tmp_path: Path) -> None:
    t = table(
        tmp_path / "regions.csv",
        ["region", "sex", "count"],  # a joint table: the region marginal is summed
        [
            ["north", "f", 1000],
            ["north", "m", 1000],
            ["south", "f", 1500],
            ["south", "m", 1500],
            ["capital", "f", 2500],
            ["capital", "m", 2500],
        ],
    )
    # Target shares: north 0.2, south 0.3, capital 0.5. Observed: south 30% over (0.39), north under.
    counts = {"north": 1100, "south": 1950, "capital": 2500}
    recs = [{"region": r} for r, c in counts.items() for _ in range(c)]
    path = write(tmp_path / "f.jsonl", recs)
    (row,) = board(path, GateSpec(safety="fairness", attribute="region", table=str(t)))
    n = sum(counts.values())
    rows = {r["value"]: r for r in row["details"]["rows"]}
    for region, share in {"north": 0.2, "south": 0.3, "capital": 0.5}.items():
        assert rows[region]["expected_share"] == round(share, 6)
        assert rows[region]["observed_share"] == round(counts[region] / n, 6)
        assert rows[region]["relative_gap"] == round((counts[region] / n - share) / share, 4)
    assert row["band"] == "critical" and [v["value"] for v in row["details"]["violations"]] == ["south"]
    assert row["value"] == round(abs(counts["south"] / n - 0.3) / 0.3, 4)
    assert "region='south': observed 35.14%, expected 30.00% (+17.1%, tolerance ±15%)" in row["reason"]
    assert row["examples"][0]["sample_ids"][0] == "s:0:1100:0"
    # 20% tolerance passes.
    assert board(path, GateSpec(safety="fairness", attribute="region", table=str(t), tolerance=0.2))[0]["passed"]


def test_fairness_with_a_conditional_table(tmp_path: Path) -> None:
    t = table(
        tmp_path / "eth.csv",
        ["region", "ethnicity", "share"],
        [["north", "moldovan", 0.6], ["north", "ukrainian", 0.4], ["south", "moldovan", 0.3], ["south", "gagauz", 0.7]],
    )
    # 1000 north (600 moldovan, 400 ukrainian: exact) and 2000 south whose gagauz are 25% short.
    recs = [{"region": "north", "ethnicity": "moldovan"}] * 600 + [{"region": "north", "ethnicity": "ukrainian"}] * 400
    recs += [{"region": "south", "ethnicity": "gagauz"}] * 1050 + [{"region": "south", "ethnicity": "moldovan"}] * 950
    path = write(tmp_path / "e.jsonl", recs)
    (row,) = board(
        path, GateSpec(safety="fairness", attribute="ethnicity", table=str(t), weight="share", given=["region"])
    )
    # Expected count of v: sum over records of P(v | region): no marginal table needed.
    expected = {"moldovan": 1000 * 0.6 + 2000 * 0.3, "ukrainian": 1000 * 0.4, "gagauz": 2000 * 0.7}
    rows = {r["value"]: r for r in row["details"]["rows"]}
    for v, e in expected.items():
        assert rows[v]["expected"] == pytest.approx(e)
    assert rows["gagauz"]["relative_gap"] == round((1050 - 1400) / 1400, 4)
    assert {v["value"] for v in row["details"]["violations"]} == {"gagauz", "moldovan"}  # 1550 vs 1200: +29%
    assert not row["passed"] and row["band"] == "critical"


def test_fairness_refuses_what_the_table_cannot_judge(tmp_path: Path) -> None:
    t = table(
        tmp_path / "eth.csv", ["region", "ethnicity", "share"], [["north", "moldovan", 0.99], ["north", "other", 0.01]]
    )
    recs = [{"region": "north", "ethnicity": "moldovan"}] * 990 + [{"region": "north", "ethnicity": "other"}] * 10
    recs += [{"region": "atlantis", "ethnicity": "moldovan"}] * 3 + [{"region": "north", "ethnicity": "martian"}] * 2
    path = write(tmp_path / "e.jsonl", recs)
    (row,) = board(
        path, GateSpec(safety="fairness", attribute="ethnicity", table=str(t), weight="share", given=["region"])
    )
    assert not row["passed"] and row["band"] == "critical"
    assert "3 records have ['region'] values the table lacks, e.g. s:0:1000:0" in row["reason"]
    assert row["details"]["untested"] == ["other"]  # expected 10 records, under ceil(9 / 0.15^2) = 400
    assert math.ceil(9 / 0.15**2) == row["details"]["min_expected"] == 400
    martian = next(v for v in row["details"]["violations"] if v["value"] == "martian")
    assert martian["expected"] == 0 and martian["relative_gap"] is None and martian["sample_ids"]
    # A column the table lacks is refused before any work, with the columns it has.
    with pytest.raises(InputError, match=r"given: .*eth\.csv has no column 'age'; columns: region, ethnicity, share"):
        board(path, GateSpec(safety="fairness", attribute="ethnicity", table=str(t), weight="share", given=["age"]))


# -- a run dir: paths resolve against the recipe's folder ----------------------------------------

RECIPE = """
name: pers
seed: 3
size: 600
params: {defect: null}
columns:
  p: {generator: "./gen.py:persona"}
gates:
  - {safety: fairness, attribute: region, table: tables/regions.csv, min_expected: 50}
  - {safety: fairness, attribute: ethnicity, table: tables/ethnicity_by_region.csv, weight: share, given: [region],
     min_expected: 50}
  - {safety: stereotypes, field: [persona, hobbies]}
  - {safety: determinism, protected: [ethnicity], attributes: [occupation], min_group: 20}
  - {dashboard: opening_entropy, field: opening_move}
  - {dashboard: anchor_share, field: anchors}
  - {dashboard: pollyanna, field: persona}
output: {part_size: 300}
"""


def test_run_dir_gates_resolve_tables_in_the_recipe_folder(run_cli, tmp_path: Path) -> None:
    recipe = pd.write_recipe(tmp_path / "recipe", RECIPE)
    out = tmp_path / "run"
    res = run_cli("run", str(recipe), "--out", str(out), "--param", "defect=fairness")
    assert res.returncode == 0, res.stdout + res.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = run_cli("verify", str(out), "--no-tokens", cwd=elsewhere)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "FAIL safety.fairness.region" in res.stdout and "region='south'" in res.stdout
    assert "PASS safety.stereotypes = 0.0 [healthy]" in res.stdout
    report = orjson.loads((out / "reports" / "verify.json").read_bytes())["summary"]
    assert {r["metric"] for r in report["safety"]} == {
        "safety.fairness.region",
        "safety.fairness.ethnicity",
        "safety.stereotypes",
        "safety.determinism",
    }


def test_a_missing_table_is_refused_at_load_with_its_line(run_cli, tmp_path: Path) -> None:
    recipe = pd.write_recipe(tmp_path / "recipe", RECIPE)
    recipe.write_text(RECIPE.replace("tables/regions.csv", "tables/nope.csv"))
    res = run_cli("run", str(recipe), "--out", str(tmp_path / "run"))
    assert res.returncode == 2
    assert res.stderr.startswith(f"{recipe}:9:") and "gates[0].table: cannot read table" in res.stderr
    assert not (tmp_path / "run").exists()
