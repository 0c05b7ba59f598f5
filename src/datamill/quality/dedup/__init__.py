"""Order-independent dedup with regeneration: ``datamill dedup RUN``.

Each round clusters the run's records (exact, structural or MinHash near-duplicates), keeps the
lowest slot of every cluster and rejects the others; rejected slots are regenerated through the
engine's public API (:class:`datamill.engine.SlotRunner`, "run these slots at this attempt") with
the next attempt seed, and the next round checks again, until nothing is rejected or the round
limit is reached. The kept set is a function of the records, not of the order they were
produced or read in. Slots still rejected after the last round are left out of the dataset.
Changed parts are rewritten atomically; ``reports/dedup.json`` lists the rejections per round
and the slots left rejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from datamill.errors import UsageError
from datamill.quality.dedup.base import Method, clusters
from datamill.quality.dedup.exact import Exact
from datamill.quality.dedup.minhash import MinHash
from datamill.quality.dedup.structural import Structural
from datamill.seeds import parse_sample_id
from datamill.store import RunDir, atomic
from datamill.store.formats import dumps_line
from datamill.store.integrity import checked_meta, part_lines, part_writer

METHODS = ("exact", "structural", "minhash", "semantic")
ID_FIELDS = frozenset({"sample_id", "trace_id"})


def make_method(name: str, threshold: float | None = None) -> Method:
    if name == "exact":
        return Exact()
    if name == "structural":
        return Structural()
    if name == "minhash":
        return MinHash(threshold if threshold is not None else 0.8)
    if name == "semantic":
        from datamill.quality.dedup.semantic import Semantic

        return Semantic(threshold if threshold is not None else 0.9)
    raise UsageError(f"--method: expected one of {', '.join(METHODS)}, got {name!r}")


def record_text(rec: dict[str, Any], fields: Sequence[str] | None) -> str:
    """The text dedup compares: the named fields, or every string field but the ids."""
    if fields:
        return "\n".join(str(rec.get(f, "")) for f in fields)
    return "\n".join(v for k, v in rec.items() if isinstance(v, str) and k not in ID_FIELDS)


def rejected_slots(records: Sequence[tuple[int, str]], method: Method) -> set[int]:
    """Slots to regenerate: in every cluster, all slots but the lowest.

    ``records`` are ``(slot, text)`` in any order; the answer does not depend on it.
    """
    order = sorted(range(len(records)), key=lambda i: (records[i][0], records[i][1]))
    texts = [records[i][1] for i in order]
    slots = [records[i][0] for i in order]
    out: set[int] = set()
    for group in clusters(len(texts), method.pairs(texts)):
        keep = min(slots[i] for i in group)
        out.update(slots[i] for i in group if slots[i] != keep)
    return out


def rejected_in_window(records: Sequence[tuple[int, str]], method: Method, window: int) -> set[int]:
    """Streaming mode (seed 001's diversity window): a slot is rejected when one of its records
    duplicates one of the ``window`` records before it, in slot order.

    Memory and work are bounded by the window, but the answer depends on record order: it is
    meant for very long runs where a global pass is too costly.
    """
    ordered = sorted(records)
    out: set[int] = set()
    for start in range(0, len(ordered), window):
        # Each block is compared with itself and the block before it: every pair within
        # ``window`` positions of each other is seen.
        lo = max(0, start - window)
        block = ordered[lo : start + window]
        texts = [t for _, t in block]
        for a, b in method.pairs(texts):
            i, j = sorted((a, b))
            if j - i <= window and lo + j >= start and block[i][0] != block[j][0] and block[i][0] not in out:
                out.add(block[j][0])
    return out


@dataclass
class DedupResult:
    method: str
    threshold: float | None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    left_rejected: list[int] = field(default_factory=list)
    attempts: dict[int, int] = field(default_factory=dict)
    records: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "threshold": self.threshold,
            "rounds": self.rounds,
            "left_rejected": self.left_rejected,
            "regenerated_slots": {str(k): v for k, v in sorted(self.attempts.items())},
            "records": self.records,
        }


def _runner(rd: RunDir, manifest: dict[str, Any]) -> Any:
    from datamill.columns import RunContext
    from datamill.engine import SlotRunner
    from datamill.recipe import load_text

    recipe = manifest["recipe"]
    base = Path(manifest["recipe_file"]).parent
    loaded = load_text(manifest["recipe_text"], manifest["recipe_file"], base).with_overrides(
        size=recipe["size"], seed=recipe["seed"], params=recipe.get("params") or None
    )
    return SlotRunner(loaded, RunContext(rd.path, "dedup", True))


def dedup_run(
    run_dir: str | Path,
    method_name: str = "exact",
    threshold: float | None = None,
    fields: Sequence[str] | None = None,
    max_rounds: int = 3,
    write: bool = True,
    window: int | None = None,
) -> DedupResult:
    """Dedup a run dir in rounds (see the module docstring) and rewrite the changed parts."""
    rd = RunDir(run_dir)
    manifest = rd.manifest()
    method = make_method(method_name, threshold)
    parts = rd.parts()
    by_slot: dict[int, list[dict[str, Any]]] = {}
    part_of: dict[int, Any] = {}
    # A keyed source's sample_ids are its keys: their slots come from the source, through a runner.
    keyed = bool((manifest["recipe"].get("source") or {}).get("key"))
    runner = _runner(rd, manifest) if keyed else None
    for part in parts:
        ids = runner.sample_ids(part.start, part.end) if runner is not None else None
        for line in part_lines(part):
            rec = orjson.loads(line)
            sid = rec["sample_id"]
            slot = runner.slot_of(sid, ids) if runner is not None else parse_sample_id(sid)[2]
            by_slot.setdefault(slot, []).append(rec)
            part_of[slot] = part
    result = DedupResult(method_name, getattr(method, "threshold", None))
    rejected: set[int] = set()
    for round_no in range(1, max_rounds + 2):
        pairs = [(s, record_text(r, fields)) for s, recs in by_slot.items() for r in recs]
        rejected = rejected_in_window(pairs, method, window) if window else rejected_slots(pairs, method)
        if not rejected or round_no > max_rounds:
            break
        result.rounds.append({"round": round_no, "rejected": sorted(rejected), "count": len(rejected)})
        runner = runner or _runner(rd, manifest)
        for outcome in runner.run(sorted(rejected), attempt=round_no):
            result.attempts[outcome.slot] = round_no
            by_slot[outcome.slot] = [] if outcome.failed or outcome.dropped else outcome.records
    result.left_rejected = sorted(rejected)
    for slot in rejected:  # still duplicates after the last round: left out, and listed
        by_slot[slot] = []
    result.records = sum(len(v) for v in by_slot.values())
    if runner is not None:
        runner.close()
    if write:
        changed = {**result.attempts, **{s: result.attempts.get(s, 0) for s in result.left_rejected}}
        _rewrite(rd, parts, by_slot, changed)
        atomic.write_bytes(rd.reports_dir / "dedup.json", orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2))
    return result


def _rewrite(
    rd: RunDir, parts: Sequence[Any], by_slot: dict[int, list[dict[str, Any]]], changed: dict[int, int]
) -> None:
    """Rewrite each part holding a regenerated slot, atomically, with its meta."""
    manifest = rd.manifest()
    out = manifest["recipe"]["output"]
    for part in parts:
        if not any(part.start <= s < part.end for s in changed):
            continue
        with part_writer(part.path, out["format"], out["compression"]) as writer:
            for slot in range(part.start, part.end):
                for rec in by_slot.get(slot, []):
                    writer.write(dumps_line(rec), rec)
            meta = checked_meta(part)
            meta["records"] = writer.records
            meta["dedup_attempts"] = {str(s): a for s, a in sorted(changed.items()) if part.start <= s < part.end}
            writer.publish(part.meta_path, meta)
