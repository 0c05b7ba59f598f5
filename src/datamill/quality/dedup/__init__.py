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

import fcntl
import os
from collections.abc import Callable, Iterator, Sequence
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
from datamill.store.integrity import HASH_FIELD, checked_meta, part_lines, part_writer

METHODS = ("exact", "structural", "minhash", "semantic")
ID_FIELDS = frozenset({"sample_id", "trace_id"})


class Combined:
    """Several methods at once: two records are duplicates when any method pairs them."""

    def __init__(self, methods: Sequence[Method]) -> None:
        self.methods = list(methods)
        self.name = "+".join(m.name for m in self.methods)
        self.threshold = next((getattr(m, "threshold", None) for m in self.methods if hasattr(m, "threshold")), None)

    def pairs(self, texts: Sequence[str]) -> list[tuple[int, int]]:
        out: set[tuple[int, int]] = set()
        for m in self.methods:
            out.update((min(a, b), max(a, b)) for a, b in m.pairs(texts))
        return sorted(out)


def make_method(name: str | Sequence[str], threshold: float | None = None) -> Method:
    """One method by name, or several (a list, or ``structural,minhash``) combined."""
    names = [n.strip() for n in name.split(",") if n.strip()] if isinstance(name, str) else list(name)
    if len(names) > 1:
        return Combined([make_method(n, threshold) for n in names])
    name = names[0] if names else ""
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


def rejected_slots(records: Sequence[tuple[int, str]], method: Method) -> dict[int, int]:
    """Slots to regenerate, each with the slot it duplicates: in every cluster, all slots but the lowest.

    ``records`` are ``(slot, text)`` in any order; the answer does not depend on it.
    """
    order = sorted(range(len(records)), key=lambda i: (records[i][0], records[i][1]))
    texts = [records[i][1] for i in order]
    slots = [records[i][0] for i in order]
    out: dict[int, int] = {}
    for group in clusters(len(texts), method.pairs(texts)):
        keep = min(slots[i] for i in group)
        out.update({slots[i]: keep for i in group if slots[i] != keep})
    return out


def rejected_in_window(records: Sequence[tuple[int, str]], method: Method, window: int) -> dict[int, int]:
    """Streaming mode (seed 001's diversity window): a slot is rejected when one of its records
    duplicates one of the ``window`` records before it, in slot order.

    Memory and work are bounded by the window, but the answer depends on record order: it is
    meant for very long runs where a global pass is too costly.
    """
    ordered = sorted(records)
    out: dict[int, int] = {}
    for start in range(0, len(ordered), window):
        # Each block is compared with itself and the block before it: every pair within
        # ``window`` positions of each other is seen.
        lo = max(0, start - window)
        block = ordered[lo : start + window]
        texts = [t for _, t in block]
        for a, b in method.pairs(texts):
            i, j = sorted((a, b))
            if j - i <= window and lo + j >= start and block[i][0] != block[j][0] and block[i][0] not in out:
                out[block[j][0]] = block[i][0]
    return out


@dataclass
class DedupResult:
    method: str
    threshold: float | None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    left_rejected: list[int] = field(default_factory=list)
    attempts: dict[int, int] = field(default_factory=dict)
    records: int = 0
    on_exhausted: str = "drop"
    by: str | None = None
    failed: list[dict[str, Any]] = field(default_factory=list)  # on_exhausted fail: the slots and why

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "threshold": self.threshold,
            "rounds": self.rounds,
            "left_rejected": self.left_rejected,
            "regenerated_slots": {str(k): v for k, v in sorted(self.attempts.items())},
            "records": self.records,
            "on_exhausted": self.on_exhausted,
            **({"by": self.by} if self.by else {}),
            "failed": self.failed,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DedupResult:
        return cls(d["method"], d["threshold"], list(d["rounds"]), list(d["left_rejected"]),
                   {int(k): int(v) for k, v in d["regenerated_slots"].items()}, int(d["records"]),
                   d.get("on_exhausted", "drop"), d.get("by"), list(d.get("failed") or []))  # fmt: skip


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


PENDING = "dedup.pending.json"  # the decided outcome, written before any part is rewritten
LOCK = "dedup.lock"


def dedup_done(run_dir: str | Path) -> DedupResult | None:
    """The outcome of a finished automatic dedup of this run (None if none finished)."""
    rd = RunDir(run_dir)
    path = rd.reports_dir / "dedup.json"
    if not path.is_file() or (rd.reports_dir / PENDING).is_file():
        return None
    doc = orjson.loads(path.read_bytes())
    if doc.get("recipe_hash") != rd.manifest().get("recipe_hash") or not doc.get("auto"):
        return None
    return DedupResult.from_dict(doc)


def dedup_run(
    run_dir: str | Path,
    method_name: str | Sequence[str] = "exact",
    threshold: float | None = None,
    fields: Sequence[str] | None = None,
    max_rounds: int = 3,
    write: bool = True,
    window: int | None = None,
    on_exhausted: str = "drop",
    by: str | None = None,
    auto: bool = False,
    memory_mb: int | None = None,
) -> DedupResult:
    """Dedup a run dir in rounds (see the module docstring) and rewrite the changed parts.

    Crash-safe: the outcome is decided from committed parts and cached responses alone, saved as
    ``reports/dedup.pending.json``, and only then are parts rewritten; a run killed at any moment
    decides the same outcome again, or finishes applying the saved one. One process at a time.
    ``auto`` (the run's own dedup) returns the finished outcome when there is one. ``memory_mb``
    bounds the staged path's memory (default ``$DATAMILL_DEDUP_MEMORY_MB`` or 512).
    """
    rd = RunDir(run_dir)
    if not write:
        return _decide(rd, method_name, threshold, fields, max_rounds, window, on_exhausted, by, memory_mb)[0]
    rd.logs_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(rd.logs_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # shards finishing together: one dedups, the others then see it done
        if auto and (done := dedup_done(run_dir)) is not None:
            return done
        pending = rd.reports_dir / PENDING
        if pending.is_file():
            doc = orjson.loads(pending.read_bytes())
            result = DedupResult.from_dict(doc["result"])
            changed_recs = {int(k): v for k, v in doc["records"].items()}
        else:
            result, by_slot = _decide(rd, method_name, threshold, fields, max_rounds, window, on_exhausted, by,
                                      memory_mb)  # fmt: skip
            changed = {**result.attempts, **{s: 0 for s in result.left_rejected}}
            changed_recs = {s: by_slot.get(s, []) for s in sorted(changed)}
            doc = {"result": result.as_dict(), "records": {str(k): v for k, v in changed_recs.items()}}
            rd.reports_dir.mkdir(parents=True, exist_ok=True)
            atomic.write_bytes(pending, orjson.dumps(doc))
        _rewrite(rd, changed_recs, result)
        final = {**result.as_dict(), "recipe_hash": rd.manifest().get("recipe_hash"), "auto": auto}
        atomic.write_bytes(rd.reports_dir / "dedup.json", orjson.dumps(final, option=orjson.OPT_INDENT_2))
        for f in result.failed:
            rd.log_event("slot_failed", slot=f["slot"], reason=f["reason"])
        pending.unlink(missing_ok=True)
        return result
    finally:
        os.close(fd)


def staged_methods(method: Method) -> list[Any] | None:
    """The methods to run staged (see :mod:`.staged`), or None if one of them runs only in memory."""
    ms = method.methods if isinstance(method, Combined) else [method]
    return ms if all(hasattr(m, "sign") for m in ms) else None


def _decide(
    rd: RunDir,
    method_name: str | Sequence[str],
    threshold: float | None,
    fields: Sequence[str] | None,
    max_rounds: int,
    window: int | None,
    on_exhausted: str,
    by: str | None,
    memory_mb: int | None = None,
    staged: bool | None = None,
) -> tuple[DedupResult, dict[int, list[dict[str, Any]]]]:
    """The rounds: which slots are rejected, regenerated, and left rejected (nothing written).

    Exact, structural and MinHash (alone or combined) run staged, in memory bounded by
    ``memory_mb`` whatever the run's size; semantic and the window mode hold the texts in memory.
    ``staged=False`` forces the in-memory path (tests compare the two). Only the records of
    changed slots are returned.
    """
    manifest = rd.manifest()
    method = make_method(method_name, threshold)
    methods = staged_methods(method)
    if methods is not None and not window and staged is not False:
        return _decide_staged(rd, method, methods, fields, max_rounds, on_exhausted, by, memory_mb)
    by_slot: dict[int, list[dict[str, Any]]] = {}
    # A keyed source's sample_ids are its keys: their slots come from the source, through a runner.
    keyed = bool((manifest["recipe"].get("source") or {}).get("key"))
    runner = _runner(rd, manifest) if keyed else None
    for part in rd.parts():
        failed = {int(f["slot"]) for f in part.meta().get("slots_failed", [])}
        for slot, rec in _part_records(part, runner):
            if slot not in failed:
                by_slot.setdefault(slot, []).append(rec)
    name = method.name if hasattr(method, "name") else str(method_name)
    result = DedupResult(name, getattr(method, "threshold", None), on_exhausted=on_exhausted, by=by)

    def find() -> dict[int, int]:
        pairs = [(s, record_text(r, fields)) for s, recs in by_slot.items() for r in recs]
        return rejected_in_window(pairs, method, window) if window else rejected_slots(pairs, method)

    rejected, runner = _rounds(
        result, max_rounds, by, find, lambda _: by_slot, by_slot, runner, lambda: _runner(rd, manifest)
    )
    for slot in rejected:  # still duplicates after the last round: left out, and listed (or failed)
        by_slot[slot] = []
    result.records = sum(len(v) for v in by_slot.values())
    if runner is not None:
        runner.close()
    return result, by_slot


def _rounds(
    result: DedupResult,
    max_rounds: int,
    by: str | None,
    find: Callable[[], dict[int, int]],
    records_of: Callable[[dict[int, int]], dict[int, list[dict[str, Any]]]],
    regenerated: dict[int, list[dict[str, Any]]],
    runner: Any,
    new_runner: Callable[[], Any],
) -> tuple[dict[int, int], Any]:
    """The regeneration rounds both paths share: ``find()`` the rejected slots (slot -> the slot it
    duplicates), regenerate them at the next attempt into ``regenerated`` (failed or dropped: []),
    until none is rejected or ``max_rounds`` have run; ``result`` gets the rounds, the slots left
    rejected and, with ``on_exhausted: fail``, their failures. Returns those slots and the runner."""
    rejected: dict[int, int] = {}
    for round_no in range(1, max_rounds + 2):
        rejected = find()
        if not rejected or round_no > max_rounds:
            break
        entry: dict[str, Any] = {"round": round_no, "rejected": sorted(rejected), "count": len(rejected)}
        if by:
            entry["by"] = _count_by(records_of(rejected), rejected, by)
        result.rounds.append(entry)
        runner = runner or new_runner()
        for outcome in runner.run(sorted(rejected), attempt=round_no):
            result.attempts[outcome.slot] = round_no
            regenerated[outcome.slot] = [] if outcome.failed or outcome.dropped else outcome.records
    result.left_rejected = sorted(rejected)
    if by and rejected:
        result.rounds.append(
            {"round": "left", "count": len(rejected), "by": _count_by(records_of(rejected), rejected, by)}
        )
    if result.on_exhausted == "fail":
        why = f"after {max_rounds} rounds of regeneration"
        result.failed = [
            {"slot": s, "reason": f"dedup: still a duplicate ({result.method}) of slot {rejected[s]} {why}"}
            for s in sorted(rejected)
        ]
    return rejected, runner


def _decide_staged(
    rd: RunDir,
    method: Method,
    methods: list[Any],
    fields: Sequence[str] | None,
    max_rounds: int,
    on_exhausted: str,
    by: str | None,
    memory_mb: int | None,
) -> tuple[DedupResult, dict[int, list[dict[str, Any]]]]:
    """:func:`_decide` through :class:`.staged.StagedDedup`: only regenerated records are held."""
    from datamill.quality.dedup.staged import StagedDedup

    manifest = rd.manifest()
    keyed = bool((manifest["recipe"].get("source") or {}).get("key"))
    runner = _runner(rd, manifest) if keyed else None
    parts = rd.parts()
    engine = StagedDedup(methods, rd.path / STAGED_DIR, memory_mb or memory_budget_mb())
    result = DedupResult(method.name, getattr(method, "threshold", None), on_exhausted=on_exhausted, by=by)
    overrides: dict[int, list[dict[str, Any]]] = {}  # regenerated slots' records (failed or dropped: [])
    shards: list[Any] = []

    def find() -> dict[int, int]:
        shards[:] = [_part_shard(p, runner, fields, overrides) for p in parts]
        return engine.run(shards)

    def records_of(rejected: dict[int, int]) -> dict[int, list[dict[str, Any]]]:
        return _records_of(parts, runner, overrides, rejected)

    rejected, runner = _rounds(
        result, max_rounds, by, find, records_of, overrides, runner, lambda: _runner(rd, manifest)
    )
    result.records = engine.count_rows(shards) - engine.count_rows(shards, rejected)
    for slot in rejected:
        overrides[slot] = []
    if runner is not None:
        runner.close()
    engine.prune(shards)
    return result, overrides


STAGED_DIR = "dedup"  # RUN/dedup/: the staged path's signatures and links (a cache, safe to delete)
MEMORY_ENV = "DATAMILL_DEDUP_MEMORY_MB"


def memory_budget_mb() -> int:
    """The staged dedup's memory budget: ``$DATAMILL_DEDUP_MEMORY_MB`` or 512."""
    from datamill.quality.dedup.staged import DEFAULT_MEMORY_MB

    raw = os.environ.get(MEMORY_ENV, "")
    try:
        return int(raw) if raw else DEFAULT_MEMORY_MB
    except ValueError:
        raise UsageError(f"{MEMORY_ENV}: expected a number of MB, got {raw!r}") from None


def _part_shard(
    part: Any, runner: Any, fields: Sequence[str] | None, overrides: dict[int, list[dict[str, Any]]]
) -> Any:
    """A part as a staged-dedup shard: its records' texts, regenerated slots replaced."""
    from datamill.quality.dedup.staged import Shard

    meta = part.meta()
    failed = {int(f["slot"]) for f in meta.get("slots_failed", [])}
    mine = {s: overrides[s] for s in sorted(overrides) if part.start <= s < part.end}
    st = part.path.stat()
    content = meta.get(HASH_FIELD) or f"{st.st_size}-{st.st_mtime_ns}"
    new_rows = [(s, record_text(r, fields)) for s, recs in mine.items() for r in recs]
    key = orjson.dumps([part.path.name, content, list(fields or []), sorted(failed), sorted(mine), new_rows])

    def rows() -> Iterator[tuple[int, str]]:
        for slot, rec in _part_records(part, runner):
            if slot not in failed and slot not in mine:
                yield slot, record_text(rec, fields)
        yield from new_rows

    return Shard(key.decode(), rows)


def _records_of(
    parts: Sequence[Any], runner: Any, overrides: dict[int, list[dict[str, Any]]], slots: dict[int, int]
) -> dict[int, list[dict[str, Any]]]:
    """The records of ``slots`` now: regenerated ones, else read from the parts."""
    import bisect

    out = {s: overrides[s] for s in slots if s in overrides}
    want = set(slots) - set(out)
    ordered = sorted(want)
    for part in parts:
        i = bisect.bisect_left(ordered, part.start)
        if i < len(ordered) and ordered[i] < part.end:
            for slot, rec in _part_records(part, runner):
                if slot in want:
                    out.setdefault(slot, []).append(rec)
    return out


def _part_records(part: Any, runner: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each record of ``part`` with its slot (a keyed source's ids resolved through ``runner``)."""
    ids = runner.sample_ids(part.start, part.end) if runner is not None else None
    for line in part_lines(part):
        rec = orjson.loads(line)
        sid = rec["sample_id"]
        yield (runner.slot_of(sid, ids) if runner is not None else parse_sample_id(sid)[2]), rec


def _count_by(by_slot: dict[int, list[dict[str, Any]]], slots: dict[int, int], by: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in slots:
        recs = by_slot.get(s) or [{}]
        key = str(recs[0].get(by))
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def _rewrite(rd: RunDir, changed: dict[int, list[dict[str, Any]]], result: DedupResult) -> None:
    """Rewrite each part holding a changed slot, atomically, with its meta (idempotent)."""
    manifest = rd.manifest()
    out = manifest["recipe"]["output"]
    attempts = {**result.attempts, **{s: result.attempts.get(s, 0) for s in result.left_rejected}}
    failed = {int(f["slot"]): f["reason"] for f in result.failed}
    keyed = bool((manifest["recipe"].get("source") or {}).get("key"))
    runner = _runner(rd, manifest) if keyed else None
    for part in rd.parts():
        mine = [s for s in changed if part.start <= s < part.end]
        if not mine:
            continue
        by_slot: dict[int, list[dict[str, Any]]] = {}
        for slot, rec in _part_records(part, runner):
            by_slot.setdefault(slot, []).append(rec)
        by_slot.update({s: changed[s] for s in mine})
        with part_writer(part.path, out["format"], out["compression"]) as writer:
            for slot in range(part.start, part.end):
                for rec in by_slot.get(slot, []):
                    writer.write(dumps_line(rec), rec)
            meta = checked_meta(part)
            meta["records"] = writer.records
            meta["dedup_attempts"] = {str(s): a for s, a in sorted(attempts.items()) if part.start <= s < part.end}
            was = [f for f in meta["slots_failed"] if int(f["slot"]) not in failed]
            now = [{"slot": s, "reason": r} for s, r in sorted(failed.items()) if part.start <= s < part.end]
            meta["slots_failed"] = sorted([*was, *now], key=lambda f: int(f["slot"]))
            writer.publish(part.meta_path, meta)
    if runner is not None:
        runner.close()
