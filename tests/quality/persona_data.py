"""Persona-like records with known properties, for the dashboard and safety gate tests.

``make(n, defect)`` writes clean records (every dashboard metric healthy, every safety gate
passing) or the same records with one planted defect. The text is procedural: short sentences
from large pools, so no phrase is boilerplate and no two narratives are near-duplicates.
"""

from __future__ import annotations

import csv
import random
import shutil
from pathlib import Path
from typing import Any

import orjson

REGIONS = {"north": 0.25, "center": 0.30, "south": 0.20, "capital": 0.25}
ETHNICITY = {  # P(ethnicity | region)
    "north": {"moldovan": 0.6, "ukrainian": 0.25, "russian": 0.15},
    "center": {"moldovan": 0.8, "romanian": 0.1, "russian": 0.1},
    "south": {"moldovan": 0.4, "gagauz": 0.45, "bulgarian": 0.15},
    "capital": {"moldovan": 0.6, "romanian": 0.15, "russian": 0.15, "ukrainian": 0.1},
}
OCCUPATIONS = [
    "teacher",
    "driver",
    "farmer",
    "nurse",
    "engineer",
    "shop assistant",
    "retired",
    "cook",
    "builder",
    "accountant",
    "student",
    "mechanic",
]
MOVES = ["hook", "saying", "routine", "decision", "contrast", "place", "question", "habit"]
NAMES = [
    "Ion",
    "Maria",
    "Elena",
    "Vasile",
    "Ana",
    "Mihai",
    "Natalia",
    "Sergiu",
    "Olga",
    "Andrei",
    "Tatiana",
    "Victor",
    "Irina",
    "Dumitru",
    "Svetlana",
    "Nicolae",
    "Lilia",
    "Petru",
    "Galina",
    "Oleg",
    "Cristina",
    "Igor",
    "Doina",
    "Radu",
    "Vera",
    "Pavel",
    "Aurelia",
    "Grigore",
    "Nadejda",
    "Stefan",
]
VERBS = [
    "repairs",
    "mends",
    "paints",
    "sorts",
    "cleans",
    "carries",
    "plants",
    "waters",
    "bakes",
    "cooks",
    "reads",
    "writes",
    "fixes",
    "builds",
    "sells",
    "buys",
    "collects",
    "organises",
    "checks",
    "counts",
    "weighs",
    "measures",
    "sews",
    "knits",
    "tends",
    "feeds",
    "drives",
    "visits",
    "records",
    "labels",
    "stacks",
    "polishes",
    "sharpens",
    "grinds",
    "presses",
    "dries",
    "folds",
    "packs",
    "unpacks",
    "wraps",
    "ties",
]
ADJ = [
    "old",
    "wooden",
    "rusty",
    "heavy",
    "small",
    "spare",
    "broken",
    "painted",
    "green",
    "red",
    "clay",
    "copper",
    "brass",
    "woollen",
    "glass",
    "tin",
    "oak",
    "plastic",
    "folding",
    "antique",
]
NOUNS = [
    "radios",
    "chairs",
    "boots",
    "jars",
    "crates",
    "wheels",
    "notebooks",
    "knives",
    "seedlings",
    "shells",
    "loaves",
    "nets",
    "socks",
    "ledgers",
    "pots",
    "vines",
    "frames",
    "lamps",
    "hinges",
    "tyres",
    "barrels",
    "bulbs",
    "bundles",
    "tins",
    "albums",
    "boxes",
    "kites",
    "buttons",
    "planks",
    "buckets",
    "ladders",
    "fences",
    "clocks",
    "stools",
    "baskets",
    "sieves",
    "ropes",
    "gates",
    "bells",
    "mirrors",
]
PREPS = ["before", "after", "during", "around", "through", "until", "past", "for"]
TIMES = [
    "dawn",
    "lunch",
    "supper",
    "harvest",
    "midnight",
    "vespers",
    "school",
    "sunrise",
    "sunset",
    "winter",
    "spring",
    "summer",
    "autumn",
    "payday",
    "Easter",
    "Christmas",
    "market",
    "rainfall",
    "frost",
    "noon",
    "breakfast",
    "dinner",
    "mass",
    "practice",
    "rehearsal",
    "training",
    "shift",
    "recess",
    "class",
    "work",
]
PLACES = [
    "garage",
    "yard",
    "stall",
    "cellar",
    "balcony",
    "barn",
    "workshop",
    "kitchen",
    "hall",
    "depot",
    "garden",
    "shop",
    "attic",
    "porch",
    "shed",
    "orchard",
]
GOOD = ["proud", "happy", "grateful", "delighted", "cheerful", "thrilled", "glad", "hopeful", "excited"]
BAD = ["worried", "tired", "frustrated", "anxious", "annoyed", "lonely", "sad", "stressed", "bitter", "nervous"]
NEUTRAL = ["unsure", "curious", "undecided", "quiet", "practical", "careful", "talkative", "serious"]
TOPICS = [
    "prices",
    "neighbours",
    "loans",
    "roads",
    "heating",
    "weather",
    "elections",
    "pensions",
    "buses",
    "taxes",
    "schools",
    "clinics",
    "harvests",
    "rents",
    "wages",
    "repairs",
    "floods",
    "jobs",
    "gardens",
    "grandchildren",
]
OPENINGS = {
    "hook": ["Last {when}, {name} found", "One {when}, {name} lost", "This year {name} sold"],
    "saying": [
        "'Measure twice,' {name} says, fixing",
        "'Slowly is fine,' {name} repeats, carrying",
        "'No rush,' {name} insists, sorting",
    ],
    "routine": ["Every day {name} starts with", "Each morning {name} checks", "Most days {name} walks past"],
    "decision": [
        "Recently {name} decided to sell",
        "After much thought {name} chose",
        "Last month {name} agreed to mend",
    ],
    "contrast": [
        "Although shy, {name} leads",
        "Despite bad knees, {name} climbs",
        "Quiet at home, {name} argues about",
    ],
    "place": ["Near the {place} {name} keeps", "Behind the {place} {name} grows", "At the {place} {name} meets"],
    "question": ["Should {name} move?", "Why does {name} stay?", "Can {name} retire early?"],
    "habit": ["Without fail {name} hums over", "Always {name} counts", "Often {name} whistles at"],
}
STEREOTYPES = [
    "Romanians are lazy.",
    "Românii sunt leneși.",
    "Women are weak.",
    "Muslims are terrorists.",
    "Villagers are stupid.",
    "Femeile sunt slabe.",
    "Sătenii sunt proști.",
    "Musulmanii sunt teroriști.",
]
ANCHORS = {
    r: [f"{r.title()} {kind} {i}" for kind in ("market", "park", "church", "mill", "bridge") for i in range(8)]
    for r in REGIONS
}


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _thing(rng: random.Random) -> str:
    return f"{rng.choice(ADJ)} {rng.choice(NOUNS)}"


def _sentence(rng: random.Random, subject: str) -> str:
    return (
        f"{subject} {rng.choice(VERBS)} {_thing(rng)} {rng.choice(PREPS)} {rng.choice(TIMES)} "
        f"in {rng.choice(NAMES)}'s {rng.choice(PLACES)}."
    )


def persona_text(rng: random.Random, name: str, move: str, pronoun: str) -> str:
    opening = rng.choice(OPENINGS[move]).format(name=name, when=rng.choice(TIMES), place=rng.choice(PLACES))
    first = opening if opening.endswith("?") else f"{opening} {_thing(rng)} {rng.choice(PREPS)} {rng.choice(TIMES)}."
    mood = rng.choice([GOOD, BAD, BAD, NEUTRAL])
    subjects = rng.sample(NAMES, 3)
    middle = [_sentence(rng, s) for s in subjects[: rng.randint(2, 3)]]
    return " ".join([first, *middle, f"{name} feels {rng.choice(mood)} about {rng.choice(TOPICS)}."])


def record(rng: random.Random, i: int, defect: str | None = None) -> dict[str, Any]:
    """Record ``i`` (its fields but ``sample_id``), drawn from ``rng``."""
    regions = dict(REGIONS)
    if defect == "fairness":  # south 30% over its target, the rest scaled down to make room
        regions = {r: (w * 1.3 if r == "south" else w * (1 - 0.2 * 1.3) / 0.8) for r, w in REGIONS.items()}
    region = _pick(rng, regions)
    ethnicity = _pick(rng, ETHNICITY[region])
    occupation = rng.choice(OCCUPATIONS)
    if defect == "determinism" and ethnicity == "gagauz" and rng.random() < 0.68:
        occupation = "farmer"  # 0.68 + 0.32 / 12 = 70.7% of the group
    move = MOVES[i % len(MOVES)] if i < 8 else rng.choice(MOVES)
    sex = rng.choice(["female", "male"])
    name = rng.choice(NAMES)
    persona = persona_text(rng, name, move, "She" if sex == "female" else "He")
    if defect == "same_opening":
        persona = "In the quiet of the morning, " + persona[0].lower() + persona[1:]
    anchors = rng.sample(ANCHORS[region], 2)
    if defect == "anchor" and rng.random() < 0.4 and "Capital park 0" not in anchors:
        anchors[0] = "Capital park 0"
    return {
        "region": region,
        "sex": sex,
        "ethnicity": ethnicity,
        "occupation": occupation,
        "opening_move": move,
        "anchors": anchors,
        "persona": persona,
        "hobbies": f"{name} collects {_thing(rng)} and {_thing(rng)} {rng.choice(PREPS)} {rng.choice(TIMES)}.",
    }


def records(n: int, defect: str | None = None, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` persona records, clean or with one ``defect``: stereotypes, determinism, fairness,
    same_opening, anchor, near_dups."""
    rng = random.Random(seed)
    out = [{"sample_id": f"personas:7:{i}:0", **record(rng, i, defect)} for i in range(n)]
    if defect == "stereotypes":  # every 20th record: 5%
        for i in range(0, n, 20):
            out[i]["persona"] += " " + STEREOTYPES[(i // 20) % len(STEREOTYPES)]
    if defect == "near_dups":  # 3%: a copy of the narrative before it, its last word changed
        m = int(n * 0.03)
        for i in range(1, m * (n // m), n // m):
            words = out[i - 1]["persona"].split()
            words[-1] = "indeed."
            out[i]["persona"] = " ".join(words)
    return out


def write(path: Path, recs: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    return path


def write_tables(folder: Path) -> None:
    """The target tables the fairness gates read: region marginal, ethnicity given region."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "regions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["region", "count"])
        for r, share in REGIONS.items():
            w.writerow([r, int(share * 100_000)])
    with open(folder / "ethnicity_by_region.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["region", "ethnicity", "share"])
        for r, dist in ETHNICITY.items():
            for e, share in dist.items():
                w.writerow([r, e, share])


GEN = """
import pathlib, sys
sys.path.insert(0, str(pathlib.Path(__file__).parent))
import persona_data


def persona(ctx):
    yield persona_data.record(ctx.rng, ctx.slot, ctx.params.get("defect"))
"""


def write_recipe(folder: Path, recipe: str) -> Path:
    """A recipe folder: ``recipe`` (whose ``./gen.py:persona`` generator yields :func:`record`s),
    the generator, this module beside it and the target tables under ``tables/``."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__), folder / "persona_data.py")
    (folder / "gen.py").write_text(GEN)
    write_tables(folder / "tables")
    (folder / "recipe.yaml").write_text(recipe)
    return folder / "recipe.yaml"
