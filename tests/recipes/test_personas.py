"""The personas recipe (issue 15): census-grounded demographics, OCEAN, anchors, narratives.

Distributions are checked against the CSV tables read here with the csv module, and exact
quota counts against this file's own largest-remainder split, not the engine's.
"""

from __future__ import annotations

import csv
import io
import statistics
import subprocess
import sys
from collections import Counter, defaultdict
from fractions import Fraction
from pathlib import Path
from typing import Any

import orjson
import pytest
from ruamel.yaml import YAML

import datamill
from helpers import cli_env

HERE = Path(datamill.__file__).parent / "recipes" / "personas"
CENSUS = HERE / "census"
LLM_FIELDS = ["narrative", "persona", "professional_persona", "hobbies", "persona_check"]
PUBLIC = ["sample_id", "region", "age_group", "sex", "education", "occupation", "ethnicity", "religion", "age",
          "ocean_scores", "anchors", "opening_move", "persona", "professional_persona", "hobbies", "trace_id",
          "prompt_hash", "persona_check"]  # fmt: skip


def table(name: str) -> list[dict[str, str]]:
    with open(CENSUS / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def hamilton(total: int, weights: list[Fraction]) -> list[int]:
    """Largest remainder, ties to the earlier row (this test's own implementation)."""
    s = sum(weights)
    exact = [total * w / s for w in weights]
    floors = [int(e) for e in exact]
    rest = sorted(range(len(weights)), key=lambda i: (-(exact[i] - floors[i]), i))
    for i in rest[: total - sum(floors)]:
        floors[i] += 1
    return floors


def recipe_text(*, llm: bool, base_url: str | None = None) -> str:
    """The built-in recipe, as written; without its LLM fields for the procedural part, or with its
    model block pointed at a loopback server."""
    yaml = YAML(typ="rt")
    data = yaml.load((HERE / "recipe.yaml").read_text())
    if not llm:
        for k in LLM_FIELDS:
            del data["columns"][k]
    if base_url:
        data["model"] = {"backend": "openai", "base_url": base_url, "model": "fake", "concurrency": 64}
    buf = io.StringIO()
    yaml.dump(data, buf)
    return buf.getvalue()


def write_recipe(tmp_path: Path, text: str) -> Path:
    # Beside the census folder's copy, so the table paths resolve as in the built-in recipe.
    (tmp_path / "census").mkdir(exist_ok=True)
    for f in CENSUS.iterdir():
        (tmp_path / "census" / f.name).write_bytes(f.read_bytes())
    path = tmp_path / "personas.yaml"
    path.write_text(text)
    return path


def records(out: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in datamill.read(out).lines()]


def check_tables(got: list[dict[str, Any]], n: int) -> None:
    """The joint counts exact, every conditional share and every marginal within 1 point of the tables."""
    # The joint region x age group x sex counts: exact (a quota on the table), by this file's own split.
    pop = table("population.csv")
    want = hamilton(n, [Fraction(r["count"]) for r in pop])
    joint = Counter((r["region"], r["age_group"], r["sex"]) for r in got)
    assert {(p["region"], p["age_group"], p["sex"]): w for p, w in zip(pop, want, strict=True) if w} == dict(joint)
    # Conditional tables: each value's share within its group within 1 point of the table, and every
    # attribute's marginal (the table's shares averaged over the drawn groups) within 1 point too.
    for name, value, given in (("education_by_age.csv", "education", "age_group"),
                               ("occupation_by_age.csv", "occupation", "age_group"),
                               ("ethnicity_by_region.csv", "ethnicity", "region"),
                               ("religion_by_region.csv", "religion", "region")):  # fmt: skip
        share: dict[str, dict[str, float]] = defaultdict(dict)
        for row in table(name):
            share[row[given]][row[value]] = float(row["share"])
        groups = Counter(r[given] for r in got)
        observed = Counter(r[value] for r in got)
        for v in {v for d in share.values() for v in d}:
            expected = sum(groups[g] * share[g].get(v, 0.0) / sum(share[g].values()) for g in groups) / n
            assert abs(observed[v] / n - expected) <= 0.01, (value, v, observed[v] / n, expected)
        for g, size in groups.items():
            if size < 2000:
                continue
            within = Counter(r[value] for r in got if r[given] == g)
            total = sum(share[g].values())
            for v, s in share[g].items():
                assert abs(within[v] / size - s / total) <= 0.02, (value, g, v)
            assert set(within) <= set(share[g])  # nothing outside the group's table


def test_procedural_personas_follow_the_tables(tmp_path: Path) -> None:
    n = 20_000
    path = write_recipe(tmp_path, recipe_text(llm=False))
    res = datamill.run(datamill.load_recipe(path, size=n), tmp_path / "a", workers=2, progress=False)
    assert res.exit_code == 0
    got = records(tmp_path / "a")
    assert len(got) == n
    check_tables(got, n)
    # OCEAN: five integer traits, N(50, 15) clipped to [1, 99].
    for trait in ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"):
        xs = [r["ocean_scores"][trait] for r in got]
        assert all(isinstance(x, int) and 1 <= x <= 99 for x in xs)
        assert abs(statistics.fmean(xs) - 50) < 0.5 and abs(statistics.pstdev(xs) - 15) < 0.6
    ranges = {"18-30": (18, 30), "31-45": (31, 45), "46-60": (46, 60), "61+": (61, 90)}
    assert all(ranges[r["age_group"]][0] <= r["age"] <= ranges[r["age_group"]][1] for r in got)
    # Anchors: two distinct places of the persona's own region; no anchor over its cap.
    places = defaultdict(set)
    for row in table("anchors.csv"):
        places[row["region"]].add(row["anchor"])
    assert all(len(set(r["anchors"])) == 2 and set(r["anchors"]) <= places[r["region"]] for r in got)
    per_region = Counter(r["region"] for r in got)
    uses = Counter((r["region"], a) for r in got for a in r["anchors"])
    assert max(c / (2 * per_region[reg]) for (reg, _), c in uses.items()) < 0.1 + 0.01
    # Opening moves: uniform over eight.
    moves = Counter(r["opening_move"] for r in got)
    assert len(moves) == 8 and max(moves.values()) / min(moves.values()) < 1.15
    # Same bytes on one worker.
    datamill.run(datamill.load_recipe(path, size=n), tmp_path / "b", workers=1, progress=False)
    assert b"".join(datamill.read(tmp_path / "a").lines()) == b"".join(datamill.read(tmp_path / "b").lines())


def test_personas_on_a_loopback_model_fill_every_field(fake_server, tmp_path: Path) -> None:
    srv = fake_server()
    path = write_recipe(tmp_path, recipe_text(llm=True, base_url=srv.base_url))
    res = subprocess.run([sys.executable, "-m", "datamill", "run", str(path), "--size", "2000", "--out",
                          str(tmp_path / "run"), "--workers", "2"], capture_output=True, text=True, env=cli_env())  # fmt: skip
    assert res.returncode == 0, res.stderr
    got = records(tmp_path / "run")
    assert len(got) == 2000
    for r in got:
        assert list(r) == PUBLIC
        assert all(isinstance(r[k], str) and r[k] for k in ("persona", "professional_persona", "hobbies"))
        assert isinstance(r["persona_check"]["ok"], bool)
    # Tiers: a 200-persona run of the same recipe is the base the 2000 run is compared with.
    base = tmp_path / "base"
    res = subprocess.run([sys.executable, "-m", "datamill", "run", str(path), "--size", "200", "--out", str(base)],
                         capture_output=True, text=True, env=cli_env())  # fmt: skip
    assert res.returncode == 0, res.stderr
    cmp = subprocess.run([sys.executable, "-m", "datamill", "status", str(tmp_path / "run"), "--compare", str(base)],
                         capture_output=True, text=True, env=cli_env())  # fmt: skip
    # (Latency on a shared 2-core machine is noise here; repairs and failures are not.)
    assert "success 100.0%, repairs 0.0%" in cmp.stdout and "drift" in cmp.stdout, cmp.stdout
    assert "repair_rate_growth" not in cmp.stdout and "success_rate_drop" not in cmp.stdout
    # The joint counts are exact whatever the model says.
    want = hamilton(2000, [Fraction(r["count"]) for r in table("population.csv")])
    assert sorted(Counter((r["region"], r["age_group"], r["sex"]) for r in got).values()) == sorted(
        w for w in want if w
    )


@pytest.mark.scale  # the embedded model writes 200 narratives: minutes on 2 cores
@pytest.mark.timeout(1800)
def test_200_personas_on_the_embedded_model(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    res = subprocess.run([sys.executable, "-m", "datamill", "run", "personas", "--size", "200", "--out", str(out),
                          "--workers", "1"], capture_output=True, text=True, env=cli_env(), timeout=1800)  # fmt: skip
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    got = records(out)
    assert len(got) == 200
    for r in got:
        assert list(r) == PUBLIC
        assert 40 <= len(r["persona"]) <= 500 and 20 <= len(r["professional_persona"]) <= 300
        assert 5 <= len(r["hobbies"]) <= 150


def test_table_sampler_mistakes_are_refused_with_their_line(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("region,sex,count\nNorth,female,10\nNorth,male,x\n")
    (tmp_path / "ok.csv").write_text("region,sex,count\nNorth,female,10\nSouth,male,5\n")
    (tmp_path / "c.csv").write_text("region,job,share\nNorth,smith,1\n")
    head = "name: t\nsize: 10\ncolumns:\n"
    cases = {
        "  d: {sampler: table, table: nope.csv}\n": (4, "columns.d.table", "cannot read table"),
        "  d: {sampler: table, table: t.csv}\n": (4, "columns.d.table", "count 'x' is not a number"),
        "  d: {sampler: table, table: ok.csv, weight: people}\n": (4, "columns.d.table", "no weight column 'people'"),
        "  d: {sampler: table, table: ok.csv, value: age}\n": (4, "columns.d.value", "no column 'age'"),
        "  d: {sampler: table, table: ok.csv}\n  j: {sampler: table, table: c.csv, weight: share, value: job, given: {region: x.region}}\n":
            (5, "columns.j.given.region", "unknown field 'x.region'"),
        "  d: {sampler: table, table: ok.csv}\n  j: {sampler: table, table: c.csv, weight: share, value: job, given: {region: d.region}}\n"
        "quotas:\n  j: table\n": (7, "quotas.j", "without given"),
    }  # fmt: skip
    for i, (body, (line, field, words)) in enumerate(cases.items()):
        path = tmp_path / f"r{i}.yaml"
        path.write_text(head + body)
        with pytest.raises(datamill.api.RecipeError) as exc:
            datamill.load_recipe(path)
        msg = str(exc.value)
        assert f"r{i}.yaml:{line}:" in msg and field in msg and words in msg, (body, msg)
    # A conditional draw whose given value has no row fails that slot, with the reason.
    (tmp_path / "ok.csv").write_text("region,sex,count\nNorth,female,10\nSouth,male,5\n")
    path = tmp_path / "run.yaml"
    path.write_text(head + "  d: {sampler: table, table: ok.csv}\n"
                    "  j: {sampler: table, table: c.csv, weight: share, value: job, given: {region: d.region}}\n")  # fmt: skip
    res = datamill.run(datamill.load_recipe(path, size=30), tmp_path / "out", workers=1, progress=False)
    assert res.exit_code == 1 and "has no row (with weight > 0) for d.region='South'" in res.failures[0]["reason"]
    # A table's content is part of the recipe hash; its path is not.
    before = datamill.load_recipe(path).hash
    (tmp_path / "c.csv").write_text("region,job,share\nNorth,smith,1\nSouth,baker,1\n")
    assert datamill.load_recipe(path).hash != before


@pytest.mark.scale  # 25,000 personas through a loopback model, then verify with every gate
@pytest.mark.timeout(1200)
def test_25k_personas_on_a_loopback_model_meet_the_tables_and_every_gate(fake_server, tmp_path: Path) -> None:
    n = 25_000
    srv = fake_server()
    path = write_recipe(tmp_path, recipe_text(llm=True, base_url=srv.base_url))
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "datamill", "run", str(path), "--size", str(n), "--out", str(out),
                          "--workers", "2"], capture_output=True, text=True, env=cli_env(), timeout=1200)  # fmt: skip
    assert res.returncode == 0, res.stderr
    got = records(out)
    check_tables(got, n)
    doc = datamill.verify(out)
    gates = doc["summary"]["gates"]
    names = {g["metric"] for g in gates}
    for kind in ("opening_entropy", "trigram_repetition", "mattr", "starter_variety", "anchor_share",
                 "rare_anchor_compliance", "anchor_region_mi", "near_dup_uniqueness", "repair_rate", "pollyanna"):  # fmt: skip
        assert any(m.startswith(f"dashboard.{kind}") for m in names), kind
    for kind in ("stereotypes", "determinism", "fairness.region", "fairness.sex", "fairness.ethnicity",
                 "fairness.religion"):  # fmt: skip
        assert f"safety.{kind}" in names, kind
    assert all(g["value"] is not None for g in gates), [g for g in gates if g["value"] is None]
    assert doc["summary"]["passed"], [g for g in gates if not g["passed"]]
