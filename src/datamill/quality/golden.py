"""Golden sets (seed 003): a fixed, balanced set of slots, regenerated and compared to a baseline.

``create`` picks ``size`` slots balanced over the cells of the ``stratify`` columns (equal count
per cell, lowest slots first), previewing only those columns. ``run`` regenerates exactly those
slots through the engine's public API, measures them with verify's metrics, and compares each
metric with the baseline within a tolerance: PASS or FAIL per metric and overall.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from datamill.errors import InputError, UsageError
from datamill.store import atomic

GOLDEN_VERSION = 1
# Defaults from seed 003's regression tests, as absolute differences; other metrics use REL_DEFAULT.
TOLERANCES: dict[str, float] = {
    "pass_rate": 0.05,
    "duplication_rate": 0.02,
    "repairs_per_record": 0.5,
}
REL_DEFAULT = 0.10  # any other numeric metric: within 10% of the baseline


def create(loaded: Any, size: int, stratify: list[str], out: str | Path) -> dict[str, Any]:
    from datamill.engine import SlotRunner

    runner = SlotRunner(loaded)
    for name in stratify:
        if name not in loaded.recipe.columns:
            raise UsageError(f"--stratify: {name!r} is not a column of {loaded.recipe.name}")
    by_cell: dict[tuple[Any, ...], list[int]] = {}
    scanned = 0
    total = loaded.recipe.size
    cells_seen: set[tuple[Any, ...]] = set()
    # Scan slots in order until every cell seen so far holds its share, or the plan ends.
    while scanned < total:
        chunk = range(scanned, min(total, scanned + 4096))
        for slot, row in zip(chunk, runner.sample(chunk, stratify), strict=True):
            key = tuple(row[n] for n in stratify)
            cells_seen.add(key)
            by_cell.setdefault(key, []).append(slot)
        scanned = chunk.stop
        share = math.ceil(size / len(cells_seen))
        if all(len(v) >= share for v in by_cell.values()) and scanned >= min(total, 20 * size):
            break
    cells = sorted(by_cell, key=repr)
    quotas = dict(zip(cells, _split(size, len(cells)), strict=True))
    slots = sorted(s for c in cells for s in by_cell[c][: quotas[c]])
    doc = {
        "golden_version": GOLDEN_VERSION,
        "recipe": loaded.recipe.name,
        "recipe_hash": loaded.hash,
        "stratify": stratify,
        "slots": slots,
        "cells": [
            {"values": dict(zip(stratify, c, strict=True)), "count": min(quotas[c], len(by_cell[c]))} for c in cells
        ],
    }
    atomic.write_bytes(Path(out), orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return doc


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def load(path: str | Path) -> dict[str, Any]:
    try:
        doc = dict(orjson.loads(Path(path).read_bytes()))
    except FileNotFoundError:
        raise InputError(f"--golden: {path}: no such file") from None
    except orjson.JSONDecodeError as exc:
        raise InputError(f"--golden: {path}: not JSON ({exc})") from None
    if doc.get("golden_version") != GOLDEN_VERSION or not isinstance(doc.get("slots"), list):
        raise InputError(f"--golden: {path}: not a golden set (made by `datamill golden create`)")
    return doc


def measure(loaded: Any, golden: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Regenerate the golden slots and return their metrics (verify's, plus pass/dup rates)."""
    from datamill.engine import SlotRunner
    from datamill.quality.verify import verify
    from datamill.store.formats import dumps_line

    if golden["recipe"] != loaded.recipe.name:
        raise InputError(f"--golden: made for recipe {golden['recipe']!r}, not {loaded.recipe.name!r}")
    runner = SlotRunner(loaded)
    outcomes = runner.run(golden["slots"])
    runner.close()
    path = workdir / "golden.jsonl"
    n = 0
    with open(path, "wb") as f:
        for o in outcomes:
            for rec in o.records:
                f.write(dumps_line(rec))
                n += 1
    if n == 0:
        raise InputError("golden run: no records were produced")
    report = verify(path, count_tokens=False)
    metrics = dict(report["summary"]["metrics"])
    metrics.pop("time_per_100_items", None)
    ok = sum(1 for o in outcomes if o.failed is None)
    metrics["pass_rate"] = round(ok / len(outcomes), 4)
    texts = Counter(orjson.dumps({k: v for k, v in r.items() if k != "sample_id"}) for o in outcomes for r in o.records)
    metrics["duplication_rate"] = round(1 - len(texts) / max(1, sum(texts.values())), 4)
    return {
        "golden_version": GOLDEN_VERSION,
        "recipe": loaded.recipe.name,
        "slots": len(golden["slots"]),
        "metrics": metrics,
    }


def compare(current: dict[str, Any], baseline: dict[str, Any], tolerances: dict[str, float]) -> list[dict[str, Any]]:
    """One row per baseline metric: its tolerance and PASS/FAIL."""
    rows = []
    for name, base in sorted(baseline["metrics"].items()):
        if not isinstance(base, (int, float)) or isinstance(base, bool):
            continue
        cur = current["metrics"].get(name)
        key = name if name in tolerances else name.split(".", 1)[0]
        if key in tolerances:
            tol, kind = tolerances[key], "abs"
            ok = cur is not None and abs(cur - base) <= tol
        else:
            tol, kind = REL_DEFAULT, "rel"
            ok = cur is not None and abs(cur - base) <= tol * max(abs(base), 1e-9)
        rows.append({"metric": name, "baseline": base, "current": cur, "tolerance": tol, "kind": kind, "passed": ok})
    return rows
