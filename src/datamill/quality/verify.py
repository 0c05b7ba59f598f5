"""``datamill verify``: a report on a run dir or a dataset file, with gates.

Reads only through :mod:`datamill.store` (run dirs, part files, JSONL files). Token lengths are
counted for every item, batch-encoded in a background thread (the tokenizer releases the GIL and
uses every core) while the next records are parsed. Text metrics (openings, trigrams, diversity)
read the first ``SAMPLE_CHARS`` characters of a deterministic sample of up to ``SAMPLE`` items
per field, so their cost and memory stay flat in N.
"""

from __future__ import annotations

import importlib.util
import math
import random
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from datamill.errors import InputError
from datamill.quality import extensions
from datamill.quality import metrics as m
from datamill.quality.board import Board, base_dir_of
from datamill.quality.content import ContentCheck
from datamill.quality.gates import evaluate
from datamill.quality.judge import JudgeCheck
from datamill.quality.stream import OTHER, CappedCounter, DuplicateIds, IntHistogram
from datamill.recipe.model import GateSpec
from datamill.store import RunDir
from datamill.store.reader import complete_parts, iter_dataset_lines
from datamill.tokenize import TokenCounter

REPORT_VERSION = 1
SAMPLE = 2000
SAMPLE_CHARS = 1500
TOKEN_BATCH = 2048
TOKEN_BATCH_CHARS = 1 << 21  # a batch of long texts ends sooner, so parsing overlaps their counting
MAX_CATEGORIES = 30  # a string field with more distinct values is text, not a category
MAX_DISTINCT = 1000  # a declared category's distinct values counted by name; the rest under "(other)"
MAX_JOINT = 100_000  # combinations of declared categories counted for mutual information
MEMO_CHARS = 64  # a category-like value up to this long has its token count memoised
MEMO_MAX = 100_000  # memoised values at most
SKIP_FIELDS = frozenset({"sample_id"})


def open_source(target: str | Path, allow_partial: bool = False) -> tuple[Iterator[bytes], dict[str, Any] | None, str]:
    """JSONL lines of a run dir (in slot order) or of a dataset file, the manifest if any, a label."""
    p = Path(target)
    if not p.exists():
        raise InputError(f"verify: {target}: no such run dir or file")
    manifest = RunDir(p).manifest() if p.is_dir() else None
    if p.is_dir():
        complete_parts(RunDir(p), allow_partial, "verify")  # missing ranges: said before any work
    return iter_dataset_lines(p, allow_partial), manifest, str(p)


def _ids_again(target: str | Path, allow_partial: bool) -> Iterator[Any]:
    """The sample_ids of ``target`` once more, in order (the duplicate check's confirming pass)."""
    for line in open_source(target, allow_partial)[0]:
        rec = orjson.loads(line)
        if isinstance(rec, dict) and rec.get("sample_id") is not None:
            yield rec["sample_id"]


def _declared_categories(manifest: dict[str, Any] | None) -> dict[str, list[Any]]:
    if not manifest:
        return {}
    out: dict[str, list[Any]] = {}
    for name, col in manifest["recipe"]["columns"].items():
        if col.get("sampler") == "categorical" and col.get("emit", True):
            out[name] = list(col["values"])
        elif col.get("sampler") == "conditional" and col.get("emit", True):
            vals: list[Any] = []
            for row in col["table"].values():
                vals.extend(v for v in row if v not in vals)
            out[name] = vals
    return out


def _near_duplicate_rate(sample: list[str]) -> float | None:
    """Share of sampled items that MinHash (threshold 0.8) finds a near-duplicate of, None without rensa."""
    if importlib.util.find_spec("rensa") is None or not sample:
        return None
    from datamill.quality.dedup import make_method, rejected_slots

    return round(len(rejected_slots(list(enumerate(sample)), make_method("minhash", 0.8))) / len(sample), 4)


def _mi(pairs: Counter[tuple[Any, Any]]) -> float:
    a: Counter[Any] = Counter()
    b: Counter[Any] = Counter()
    for (x, y), c in pairs.items():
        a[x] += c
        b[y] += c
    n = sum(pairs.values())
    return sum((c / n) * math.log2(c * n / (a[x] * b[y])) for (x, y), c in pairs.items()) if n else 0.0


def _content_check(spec: GateSpec) -> ContentCheck:
    return JudgeCheck(spec) if spec.judge is not None else ContentCheck(spec)


class _Verdicts:
    """Running totals of a judge field (``{score}``) or a validate field (``{ok}``): flat in N."""

    __slots__ = ("invalid", "judged", "score_sum", "scored")

    def __init__(self) -> None:
        self.scored = self.score_sum = self.judged = self.invalid = 0

    def add(self, value: dict[str, Any]) -> bool:
        """Count ``value``; False when it is neither a score nor a verdict."""
        score, ok = value.get("score"), value.get("ok")
        found = False
        if isinstance(score, int) and not isinstance(score, bool):
            self.scored += 1
            self.score_sum += score
            found = True
        if isinstance(ok, bool):
            self.judged += 1
            self.invalid += not ok
            found = True
        return found

    def metrics(self, name: str, n: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.scored:
            out[f"columns.{name}.mean_score"] = round(self.score_sum / self.scored, 4)
            out[f"columns.{name}.scored"] = self.scored
            out[f"columns.{name}.unscored"] = n - self.scored
        if self.judged:
            out[f"columns.{name}.invalid_rate"] = round(self.invalid / self.judged, 6)
            out[f"columns.{name}.invalid"] = self.invalid
            out[f"columns.{name}.unchecked"] = n - self.judged
        return out


class _Field:
    """One string field: its length distributions and its reservoir sample.

    Lengths go to exact integer histograms (flat in N: a count per distinct length). Characters are
    buffered per token batch and counted in one C loop; token counts come from the tokenizer's
    thread (``tokens``) or, for a repeated short value of a category-like field, from the value's
    memoised count (``memo_tokens``), so the two threads never write the same counter.

    The sample is Li's Algorithm L: after the reservoir fills, the number of items to skip before
    the next replacement is drawn at once (a geometric jump), so a long stream costs a few random
    draws per replacement, not one per item. The same records in the same order give the same sample.
    """

    __slots__ = ("cat", "char_buf", "chars", "memo_buf", "memo_tokens", "next", "sample", "seen", "tokens", "w")

    def __init__(self) -> None:
        self.chars = IntHistogram()
        self.char_buf: list[int] = []
        self.tokens = IntHistogram()
        self.memo_tokens = IntHistogram()
        self.memo_buf: list[int] = []
        self.cat = True  # values repeat (a category): their token counts are memoised
        self.sample: list[str] = []
        self.seen = 0
        self.w = 1.0
        self.next = 0  # the 1-based item that replaces a sampled one next (0: the reservoir is not full)

    def flush(self) -> None:
        self.chars.update(self.char_buf)
        self.char_buf.clear()
        self.memo_tokens.update(self.memo_buf)
        self.memo_buf.clear()

    def token_lengths(self) -> IntHistogram:
        out = IntHistogram()
        out.merge(self.tokens)
        out.merge(self.memo_tokens)
        return out

    def offer(self, value: str, rng: random.Random) -> None:
        """Count ``value`` (the ``seen``-th item) into the sample."""
        if len(self.sample) < SAMPLE:
            self.sample.append(value[:SAMPLE_CHARS])
            if len(self.sample) == SAMPLE:
                self.w = math.exp(math.log(1.0 - rng.random()) / SAMPLE)
                self.next = self.seen + self._skip(rng) + 1
            return
        if self.seen == self.next:
            self.sample[rng.randrange(SAMPLE)] = value[:SAMPLE_CHARS]
            self.w *= math.exp(math.log(1.0 - rng.random()) / SAMPLE)
            self.next = self.seen + self._skip(rng) + 1

    def _skip(self, rng: random.Random) -> int:
        if self.w >= 1.0:
            return 0
        return int(math.log(1.0 - rng.random()) / math.log(1.0 - self.w))


def verify(
    target: str | Path,
    tokenizer: str | Path | None = None,
    gates: list[GateSpec] | None = None,
    perf_budget_sec_per_100: float | None = None,
    count_tokens: bool = True,
    params: dict[str, Any] | None = None,
    allow_partial: bool = False,
) -> dict[str, Any]:
    """Build the verify report of ``target`` (see the module docstring); gates are evaluated."""
    t0 = time.perf_counter()
    lines, manifest, label = open_source(target, allow_partial)
    counter = TokenCounter(tokenizer) if count_tokens else None
    declared = _declared_categories(manifest)
    rng = random.Random(0)
    fields: dict[str, _Field] = {}
    cats: dict[str, CappedCounter] = {k: CappedCounter(MAX_DISTINCT) for k in declared}
    maybe_cats: dict[str, Counter[str] | None] = {}
    ids = DuplicateIds()
    slot_cells: Counter[tuple[Any, ...]] = Counter()
    quota_keys = list(((manifest or {}).get("plan", {}).get("quota_cells") or [{"values": {}}])[0]["values"])
    cat_keys = list(declared)
    joint: Counter[tuple[Any, ...]] | None = Counter()  # declared categories together, for mutual information
    pend_fields: list[_Field] = []
    pend_texts: list[str] = []
    pend_chars = 0
    memo: dict[str, int] = {}  # token counts of repeated short values (categories), counted once
    verdicts: dict[str, _Verdicts] = {}  # judge and validate fields: {score, reason} / {ok, error}
    n = 0
    ext_params = {**((manifest or {}).get("recipe", {}).get("params") or {}), **(params or {})}
    extension: Any = None
    checks = [_content_check(g) for g in gates or [] if g.check is not None]
    board = Board(gates or [], base_dir_of(manifest), Path(target) if manifest else None)
    if board.active:  # before any thread starts: the board reads the source itself in a forked process
        board.run_beside(lambda: open_source(target, allow_partial)[0])
    pool = ThreadPoolExecutor(max_workers=1) if counter is not None else None
    inflight: list[Future[None]] = []

    def count_batch(batch_fields: list[_Field], texts: list[str]) -> None:
        assert counter is not None
        counts = counter.count(texts)
        for f, text, c in zip(batch_fields, texts, counts, strict=True):
            f.tokens.counts[c] += 1
            if f.cat and len(text) <= MEMO_CHARS and len(memo) < MEMO_MAX:
                memo[text] = c

    def flush() -> None:
        nonlocal pend_fields, pend_texts, pend_chars
        # One batch in flight at a time keeps memory bounded.
        for fut in inflight:
            fut.result()
        inflight.clear()
        if pool is not None and pend_texts:
            inflight.append(pool.submit(count_batch, pend_fields, pend_texts))
        pend_fields, pend_texts, pend_chars = [], [], 0
        for f in fields.values():
            f.flush()

    try:
        for line in lines:
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise InputError(f"verify: {label}: line {n + 1} is not JSON") from None
            if not isinstance(rec, dict):
                raise InputError(f"verify: {label}: line {n + 1} is not a JSON object")
            n += 1
            if n == 1:
                extension = extensions.for_record(rec, ext_params)
                if extension is not None and not checks:  # the recipe's own content gates, unless some are declared
                    checks = [_content_check(g) for g in getattr(extension, "content_gates", lambda: [])()]
            if checks:
                cache: dict[Any, Any] = {}
                for check in checks:
                    check.add(rec, cache)
            if extension is not None:
                extension.add(rec)
            sid = rec.get("sample_id")
            if sid is not None:
                ids.add(sid)
                if quota_keys and str(sid).endswith(":0"):
                    slot_cells[tuple(rec.get(k) for k in quota_keys)] += 1
            if joint is not None and len(cat_keys) > 1:
                joint[tuple(repr(rec.get(k)) for k in cat_keys)] += 1
                if len(joint) > MAX_JOINT:
                    joint = None
            for key, value in rec.items():
                if key in SKIP_FIELDS:
                    continue
                if key in cats:
                    cats[key].add(value)
                if isinstance(value, dict) and ("score" in value or "ok" in value):
                    verdict = verdicts.get(key) or _Verdicts()
                    if verdict.add(value):
                        verdicts[key] = verdict
                if isinstance(value, str):
                    f = fields.get(key)
                    if f is None:
                        f = fields[key] = _Field()
                    chars = len(value)
                    f.char_buf.append(chars)
                    if counter is not None:
                        known = memo.get(value)
                        if known is None:
                            pend_fields.append(f)
                            pend_texts.append(value)
                            pend_chars += chars
                        else:
                            f.memo_buf.append(known)
                    f.seen += 1
                    if not f.next or f.seen == f.next:  # filling the reservoir, or the next replacement
                        f.offer(value, rng)
                    if key not in cats:
                        if key in maybe_cats:
                            mc = maybe_cats[key]
                        else:
                            mc = maybe_cats[key] = Counter()
                        if mc is not None:
                            mc[value] += 1
                            if len(mc) > MAX_CATEGORIES:
                                maybe_cats[key] = None
                                f.cat = False
            if len(pend_texts) >= TOKEN_BATCH or pend_chars >= TOKEN_BATCH_CHARS or not n % TOKEN_BATCH:
                flush()
        flush()
        flush()  # waits for the last batch
    except BaseException:
        board.abandon()
        raise
    finally:
        if pool is not None:
            pool.shutdown()
    if n == 0:
        board.abandon()
        raise InputError(f"verify: {label}: no records")
    dup_count, dups = ids.finish(lambda: _ids_again(target, allow_partial))

    histograms: dict[str, dict[Any, int]] = {k: dict(v) for k, v in cats.items()}
    for k, mc in maybe_cats.items():
        if mc is not None and len(mc) < n:  # repeated values: a category, not free text
            histograms[k] = dict(mc)
    token_lengths = {k: f.token_lengths() for k, f in fields.items()} if counter else {}
    summary_fields = {
        k: {"chars": f.chars.percentiles(), **({"tokens": token_lengths[k].percentiles()} if counter else {})}
        for k, f in fields.items()
    }
    flat: dict[str, Any] = {"num_items": n, "duplicate_sample_ids": dup_count}
    for k, units in summary_fields.items():
        for unit, stats in units.items():
            for stat, v in stats.items():
                flat[f"{unit}.{k}.{stat}"] = v
    collapse: dict[str, str | None] = {}
    for k, f in fields.items():
        if k in histograms:
            continue
        sample = f.sample
        flat[f"opening_entropy.{k}"] = round(m.opening_entropy(sample), 4)
        flat[f"trigram_repetition.{k}"] = round(m.trigram_repetition(sample), 4)
        flat[f"lexical_diversity.{k}"] = round(m.lexical_diversity(sample), 4)
        flat[f"starter_variety.{k}"] = round(m.starter_variety(sample), 4)
        flat[f"uniqueness.{k}"] = round(m.uniqueness(sample), 4)
        flat[f"near_duplicate_rate.{k}"] = _near_duplicate_rate(sample)
        for metric in ("opening_entropy", "trigram_repetition"):
            collapse[f"{metric}.{k}"] = m.collapse_level(metric, flat[f"{metric}.{k}"])
    for k, h in histograms.items():
        flat[f"top10_share.{k}"] = round(m.top_k_share_of_counts(h, 10, skip=OTHER), 4)
        flat[f"uniqueness.{k}"] = round(len(h) / max(1, sum(h.values())), 4)
    quota = []
    if manifest and quota_keys:
        worst = 0.0
        for cell in manifest["plan"]["quota_cells"]:
            key = tuple(cell["values"][q] for q in quota_keys)
            actual = slot_cells.get(key, 0)
            quota.append(
                {"values": cell["values"], "planned": cell["count"], "actual": actual, "ok": actual == cell["count"]}
            )
            worst = max(worst, abs(actual - cell["count"]) / max(1, manifest["plan"]["slots"]))
        flat["quota.max_deviation"] = round(worst, 6)
    if manifest:
        targets = {
            name: dict(zip(col["values"], col.get("weights") or [1] * len(col["values"]), strict=False))
            for name, col in manifest["recipe"]["columns"].items()
            if col.get("sampler") == "categorical" and name not in (manifest["recipe"].get("quotas") or {})
        }
        for name, tw in targets.items():
            if name in cats:
                flat[f"category_balance.{name}"] = round(m.category_balance(cats[name], tw), 4)
    for i, a in enumerate(cat_keys if joint is not None else []):
        for j in range(i + 1, len(cat_keys)):
            pairs: Counter[tuple[Any, Any]] = Counter()
            for combo, c in (joint or {}).items():
                pairs[(combo[i], combo[j])] += c
            flat[f"mutual_information.{a}.{cat_keys[j]}"] = round(_mi(pairs), 4)
    for k, verdict in verdicts.items():
        flat.update(verdict.metrics(k, n))
    boarded = board.finish()  # dashboard and safety gates: their time counts in time_per_100_items
    flat.update(boarded["metrics"])
    seconds = time.perf_counter() - t0
    flat["time_per_100_items"] = round(seconds / n * 100, 4)
    for check in checks:
        if isinstance(check, JudgeCheck):
            check.run()
        flat[check.name] = check.share()
    plain = [g for g in gates or [] if g.check is None and g.dashboard is None and g.safety is None]
    all_gates = plain + [c.spec for c in checks]
    if perf_budget_sec_per_100 is not None:
        all_gates.append(GateSpec(metric="time_per_100_items", max=perf_budget_sec_per_100, severity="warn"))
    gate_results = evaluate(all_gates, flat)
    for res, g in zip(gate_results, all_gates, strict=True):
        if g.column is not None and res["value"] is None:
            what = "a judge score {score}" if g.min_mean_score is not None else "a validate verdict {ok}"
            res["reason"] = f"no record has {what} in field {g.column!r}: is it the judge or validate column's name?"
    content = {c.name: c.summary() for c in checks}
    for res in gate_results:
        found = content.get(res["metric"])
        if found is None:
            continue
        if found["spans"] == 0:
            res["reason"] = "no spans in any record: the data has none, or spans: names the wrong field or pattern"
        elif not res["passed"] and found["examples"]:
            ex = found["examples"][0]
            missing = f" (missing {', '.join(map(str, ex['missing']))})" if ex.get("missing") else ""
            res["reason"] += (
                f"; {found['failed_spans']} of {found['spans']} spans fail,"
                f" e.g. {ex['sample_id']}: {ex['reason']}{missing}"
            )
        res["examples"] = found["examples"]
    gate_results += boarded["gates"]
    ext_header: dict[str, Any] = {}
    ext_summary: dict[str, Any] = {}
    if extension is not None:
        ext_header, ext_summary, ext_gates = extension.finish(token_lengths, n)
        gate_results += ext_gates
    report = {
        "header": {
            "report_version": REPORT_VERSION,
            "num_items": n,
            "source": label,
            "recipe": None
            if not manifest
            else {
                "name": manifest["recipe_name"],
                "version": manifest["recipe"]["version"],
                "hash": manifest["recipe_hash"],
            },
            "categories": {k: dict(v) for k, v in cats.items()},
            **ext_header,
        },
        "summary": {
            "fields": summary_fields,
            "histograms": histograms,
            "quota": quota,
            "duplicate_sample_ids": dups,
            "duplicate_sample_id_count": dup_count,
            "lengths": {k: f.chars.bins() for k, f in fields.items()},
            "metrics": flat,
            "collapse": collapse,
            "time_per_100_items": flat["time_per_100_items"],
            "tokenizer": str(counter.path) if counter else None,
            "gates": gate_results,
            "content": content,
            "dashboard": boarded["dashboard"],
            "safety": boarded["safety"],
            "passed": not dup_count and all(g["passed"] or g["severity"] == "warn" for g in gate_results),
            **ext_summary,
        },
    }
    return report
