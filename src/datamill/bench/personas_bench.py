"""``datamill bench personas``: the personas recipe's procedural part (no LLM) against a bare loop.

- ``datamill``: the built-in recipe without its narrative columns, run by ``datamill.run`` on
  ``workers`` processes: table samplers (the joint quota exact), the age/OCEAN and anchor
  generators, templates, part commits with fsync, everything.
- ``bare``: one process per worker, a plain loop over the same tables (one Mersenne Twister per
  persona, ``random.choices`` per table, the same generators' arithmetic), each record dumped with
  orjson to a file. No quotas, no checks, no commit protocol: the floor.
"""

from __future__ import annotations

import csv
import io
import multiprocessing as mp
import random
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

LLM_FIELDS = ("narrative", "persona", "professional_persona", "hobbies", "persona_check")


def procedural_text() -> tuple[str, Path]:
    """The built-in recipe's text without its LLM fields, and its folder (for the tables)."""
    from ruamel.yaml import YAML

    import datamill

    here = Path(datamill.__file__).parent / "recipes" / "personas"
    yaml = YAML(typ="rt")
    data = yaml.load((here / "recipe.yaml").read_text())
    for k in LLM_FIELDS:
        del data["columns"][k]
    buf = io.StringIO()
    yaml.dump(data, buf)
    return buf.getvalue(), here


def _bare(here: Path, lo: int, hi: int, path: str) -> int:
    def rows(name: str) -> list[dict[str, str]]:
        with open(here / "census" / name, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    pop = rows("population.csv")
    pop_w = [float(r["count"]) for r in pop]
    cond: dict[str, dict[str, tuple[list[str], list[float]]]] = {}
    for name, value, given in (("education_by_age.csv", "education", "age_group"),
                               ("occupation_by_age.csv", "occupation", "age_group"),
                               ("ethnicity_by_region.csv", "ethnicity", "region"),
                               ("religion_by_region.csv", "religion", "region")):  # fmt: skip
        groups: dict[str, tuple[list[str], list[float]]] = defaultdict(lambda: ([], []))
        for r in rows(name):
            groups[r[given]][0].append(r[value])
            groups[r[given]][1].append(float(r["share"]))
        cond[value] = dict(groups)
    anchors: dict[str, tuple[list[str], list[float]]] = defaultdict(lambda: ([], []))
    for r in rows("anchors.csv"):
        anchors[r["region"]][0].append(r["anchor"])
        anchors[r["region"]][1].append(float(r["weight"]))
    moves = [f"move {i}" for i in range(8)]
    n = 0
    with open(path, "wb") as f:
        buf = []
        for slot in range(lo, hi):
            rng = random.Random(slot)
            demo = rng.choices(pop, weights=pop_w)[0]
            rec: dict[str, Any] = {"sample_id": f"personas:0:{slot}:0", "region": demo["region"],
                                   "age_group": demo["age_group"], "sex": demo["sex"]}  # fmt: skip
            for value, given in (("education", "age_group"), ("occupation", "age_group"), ("ethnicity", "region"),
                                 ("religion", "region")):  # fmt: skip
                vals, ws = cond[value][demo[given]]
                rec[value] = rng.choices(vals, weights=ws)[0]
            rec["age"] = rng.randint(18, 90)
            rec["ocean_scores"] = {t: min(99, max(1, round(rng.gauss(50.0, 15.0)))) for t in "OCEAN"}
            rec["opening_move"] = rng.choice(moves)
            names, ws = anchors[demo["region"]]
            names, ws = list(names), list(ws)
            picked = []
            for _ in range(2):
                i = rng.choices(range(len(names)), weights=ws)[0]
                picked.append(names.pop(i))
                ws.pop(i)
            rec["anchors"] = picked
            rec["trace_id"] = f"{demo['region']}-{slot}"
            buf.append(orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE))
            n += 1
            if len(buf) >= 4096:
                f.write(b"".join(buf))
                buf.clear()
        f.write(b"".join(buf))
    return n


def run_bench(size: int = 100_000, workers: int = 2) -> dict[str, Any]:
    import datamill

    text, here = procedural_text()
    tmp = Path(tempfile.mkdtemp(prefix="dm-bench-personas-"))
    try:
        recipe = datamill.load_recipe(text, size=size, base_dir=here)
        t = time.perf_counter()
        res = datamill.run(recipe, tmp / "run", workers=workers, progress=False)
        ours = time.perf_counter() - t
        if res.exit_code != 0:
            raise RuntimeError(f"personas run failed: {res.failures[:1]}")
        bounds = [size * w // workers for w in range(workers + 1)]
        t = time.perf_counter()
        with mp.get_context("fork").Pool(workers) as pool:
            bare_n = sum(pool.starmap(_bare, [(here, bounds[w], bounds[w + 1], str(tmp / f"bare{w}.jsonl"))
                                              for w in range(workers)]))  # fmt: skip
        bare = time.perf_counter() - t
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "size": size, "workers": workers, "datamill_s": round(ours, 2), "datamill_per_s": round(size / ours),
        "bare_s": round(bare, 2), "bare_per_s": round(bare_n / bare), "ratio": round(bare / ours, 3),
    }  # fmt: skip
