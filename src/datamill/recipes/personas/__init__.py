"""The built-in ``personas`` recipe (seed 003): census-grounded demographics, OCEAN, anchors, narratives.

The procedural part lives in ``recipe.yaml`` (table samplers over ``census/*.csv``); the
generators here draw what a table cannot: an age, an OCEAN profile and local anchors per persona
(distinct, weighted, each anchor's share within its region capped), and the internal ids.

OCEAN: each of the five traits is an integer score, ``round(N(50, 15))`` clipped to [1, 99],
independent of the others and of the demographics (documented in docs/personas.md).
"""

from __future__ import annotations

import csv
import hashlib
import itertools
from bisect import bisect_right
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
ANCHORS = str(HERE / "census" / "anchors.csv")
TRAITS = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")
AGE_RANGES = {"18-30": (18, 30), "31-45": (31, 45), "46-60": (46, 60), "61+": (61, 90)}


def profile(ctx: Any) -> Iterator[dict[str, Any]]:
    """``age`` (uniform within the age group), ``ocean_scores`` (five traits) and ``anchors``."""
    rng = ctx.rng
    demo = ctx.inputs["demo"]
    lo, hi = AGE_RANGES.get(str(demo["age_group"]), (18, 90))
    age = rng.randint(lo, hi)
    scores = {t: min(99, max(1, round(rng.gauss(50.0, 15.0)))) for t in TRAITS}
    yield {"age": age, "ocean_scores": scores, "anchors": _anchors(ctx.params, str(demo["region"]), rng)}


@cache
def _anchor_table(path: str, cap: float) -> dict[str, tuple[list[str], list[float]]]:
    """Region -> (anchors, cumulative weights), each weight capped at ``cap`` of its region's total."""
    by_region: dict[str, tuple[list[str], list[float]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            names, weights = by_region.setdefault(row["region"], ([], []))
            names.append(row["anchor"])
            weights.append(float(row["weight"]))
    out: dict[str, tuple[list[str], list[float]]] = {}
    for region, (names, weights) in by_region.items():
        if cap * len(weights) < 1:
            raise ValueError(f"anchors: a cap of {cap} needs at least {int(1 / cap) + 1} anchors per region")
        for _ in range(len(weights)):  # water-filling: clip at the cap, spread the excess, repeat
            total = sum(weights)
            over = [i for i, w in enumerate(weights) if w > cap * total + 1e-12]
            if not over:
                break
            for i in over:
                weights[i] = cap * total
        out[region] = (names, list(itertools.accumulate(weights)))
    return out


def _anchors(params: dict[str, Any], region: str, rng: Any) -> list[str]:
    """``anchors_per_persona`` distinct anchors of ``region``, drawn by weight (capped).

    Drawing from the whole list and redrawing a repeat is the same distribution as drawing from
    the rest renormalised, and needs no copy of the list per persona.
    """
    path = str(params.get("anchors_table") or ANCHORS)
    names, cum = _anchor_table(path, float(params.get("anchor_cap", 0.1)))[region]
    k = min(int(params.get("anchors_per_persona", 2)), len(names))
    chosen: list[int] = []
    while len(chosen) < k:
        i = min(bisect_right(cum, rng.random() * cum[-1]), len(names) - 1)
        if i not in chosen:
            chosen.append(i)
    return [names[i] for i in chosen]


def internals(ctx: Any) -> Iterator[dict[str, str]]:
    """``trace_id`` (``REGION-SLOT``) and ``prompt_hash``: what the narrative prompt is built from,
    hashed, so identical prompts are found by equal hashes."""
    parts = [repr(ctx.inputs[k]) for k in sorted(ctx.inputs)]
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).hexdigest()
    yield {"trace_id": f"{ctx.inputs['demo']['region']}-{ctx.slot}", "prompt_hash": digest}
