"""Dashboard metrics (seed 003's quality dashboard), one meter per ``{dashboard: NAME}`` gate.

A meter either counts every record as it streams by (``add``: counters whose size depends on
the distinct values seen, not on N) or reads a deterministic sample of records at the end
(``sample_size`` > 0: :class:`datamill.quality.board.Board` keeps one reservoir per size). Each
returns a :class:`Reading`: the value, what it was computed on, details for the report and
examples (sample_ids). Grading into healthy / warning / critical is the board's job.

Definitions (also in docs/quality.md, "Dashboard and safety gates"); words are runs of letters
and digits (any script, inner apostrophes kept), lower-cased:

- ``opening_entropy``: Shannon entropy (bits) of the field's values over all records; with
  ``words: K``, of the first K words of the text, over the sample.
- ``trigram_repetition``: share of word-trigram occurrences in the sampled texts whose trigram
  occurs in more than ``threshold`` (default 5%) of the sampled records: boilerplate phrases.
- ``mattr``: mean over sampled records of the moving-average type-token ratio (windows of
  ``window`` words, default 50; a shorter text is one window).
- ``starter_variety``: distinct sentence starters (first ``words`` words, default 2) over
  sentences, in the first 1,000 sentences of the sample (a fixed count, since the share of
  distinct starters falls as sentences are added).
- ``anchor_share``: the largest share of records holding one anchor (top ``top`` listed).
- ``rare_anchor_compliance``: share of records with at least one anchor outside the ``top`` most
  common anchors.
- ``anchor_region_mi``: mutual information between an anchor and the ``by`` field over anchor
  occurrences, divided by the entropy of ``by``: the share of ``by`` that anchors give away.
- ``near_dup_uniqueness``: 1 - share of sampled records that MinHash dedup (Jaccard >=
  ``threshold``, default 0.8) rejects: every record of a near-duplicate cluster but one.
- ``repair_rate``: repaired attempts over answered ones (``ok`` + ``repaired``, cache hits aside)
  in the run's ``logs/attempts.jsonl``.
- ``pollyanna``: share of sampled records whose polarity score (positive words - negative words)
  / words is at least ``threshold`` (default 0.05): narratives with nothing but good to say.
"""

from __future__ import annotations

import importlib.util
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import orjson

from datamill.recipe import gatekinds
from datamill.recipe.gatekinds import FOLD, WORD, Lexicon, load_lexicon
from datamill.recipe.model import GateSpec

EXAMPLES = 5
DATA = Path(__file__).parent / "data"
MAX_VALUES = 10_000  # opening_entropy on values: more distinct ones than this is free text, not a category
MAX_COMBOS = 50_000  # rare_anchor_compliance: distinct anchor sets counted exactly before falling back to a sample
COMBO_SAMPLE = 20_000
STARTER_SENTENCES = 1000  # starter_variety reads sampled records until it has this many sentences
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")

Sample = list[tuple[Any, dict[str, str]]]


@dataclass
class Reading:
    """What a meter measured. ``value`` None: not measurable (``error`` says whether that fails)."""

    value: float | None
    items: int = 0
    sampled: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""
    error: bool = False


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def entropy(counts: Counter[Any] | dict[Any, int]) -> float:
    total = sum(counts.values())
    return -sum((c / total) * math.log2(c / total) for c in counts.values() if c) if total else 0.0


def _key(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) else orjson.dumps(value).decode()


def anchor_list(value: Any) -> list[str]:
    """A record's anchors: a list (of strings, or of objects with a ``name``), or one string; distinct."""
    if value is None:
        return []
    if type(value) is list and all(type(x) is str for x in value):  # the common case, fast
        return value if len(set(value)) == len(value) else list(dict.fromkeys(value))
    items = value if isinstance(value, list) else [value]
    out = []
    for x in items:
        if isinstance(x, dict) and "name" in x:
            x = x["name"]
        out.append(x if isinstance(x, str) else orjson.dumps(x).decode())
    return list(dict.fromkeys(out))


class Meter:
    """One dashboard metric of one field. Streaming meters override ``add``; sampled ones read
    the sample in ``finish``."""

    sample_size = 0  # > 0: finish() gets a deterministic sample of this many records

    def __init__(self, spec: GateSpec, field: str | None) -> None:
        self.spec = spec
        self.field = field

    def opt(self, name: str) -> Any:
        return gatekinds.option(self.spec, name)

    def add(self, rec: dict[str, Any], sid: Any, cache: dict[str, Any]) -> None:
        """Count one record (streaming meters); ``cache`` is shared by the meters of one record."""

    @property
    def streaming(self) -> bool:
        return type(self).add is not Meter.add

    def finish(self, sample: Sample) -> Reading:
        raise NotImplementedError

    def texts(self, sample: Sample) -> list[tuple[Any, str]]:
        return [(sid, t[self.field]) for sid, t in sample if self.field in t]

    def no_text(self) -> Reading:
        return Reading(None, reason=f"no record has a text in field {self.field!r}", error=True)


class OpeningEntropy(Meter):
    def __init__(self, spec: GateSpec, field: str | None) -> None:
        super().__init__(spec, field)
        self.k = spec.words
        self.sample_size = int(self.opt("sample")) if self.k else 0
        self.counts: Counter[Any] = Counter()
        self.ids: dict[Any, list[Any]] = {}
        self.overflow = False

    @property
    def streaming(self) -> bool:
        return not self.k  # the first words of a text are read from the sample

    def add(self, rec: dict[str, Any], sid: Any, cache: dict[str, Any]) -> None:
        if self.k or self.overflow:
            return
        value = rec.get(self.field) if self.field else None
        if value is None:
            return
        key = _key(value)
        if key not in self.counts and len(self.counts) >= MAX_VALUES:
            self.overflow = True
            return
        self.counts[key] += 1
        ids = self.ids.setdefault(key, [])
        if len(ids) < 3:
            ids.append(sid)

    def finish(self, sample: Sample) -> Reading:
        if self.overflow:
            return Reading(
                None,
                reason=f"{self.field!r} has more than {MAX_VALUES:,} distinct values: free text? "
                "give words: K to measure its first K words",
                error=True,
            )
        counts, ids = self.counts, self.ids
        if self.k:
            counts, ids = Counter(), {}
            for sid, text in self.texts(sample):
                w = words(text[: 100 * self.k])  # the opening only; past K words they are whole
                if len(w) <= self.k and len(text) > 100 * self.k:
                    w = words(text)
                w = w[: self.k]
                if w:
                    key = " ".join(w)
                    counts[key] += 1
                    if len(ids.setdefault(key, [])) < 3:
                        ids[key].append(sid)
        n = sum(counts.values())
        if not n:
            return self.no_text() if self.k else Reading(None, reason=f"no record has field {self.field!r}", error=True)
        top = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
        examples = [{"value": v, "share": round(c / n, 4), "sample_ids": ids[v]} for v, c in top[:EXAMPLES]]
        details = {
            "distinct": len(counts),
            "max_bits": round(math.log2(len(counts)), 4) if counts else 0.0,
            "distribution": {str(v): c for v, c in top[:30]},
        }
        return Reading(
            round(abs(entropy(counts)), 4),
            n,
            n if self.k else None,
            details,
            examples,
            reason=f"most common: {top[0][0]!r} in {top[0][1] / n:.1%}",
        )


class TrigramRepetition(Meter):
    def __init__(self, spec: GateSpec, field: str | None) -> None:
        super().__init__(spec, field)
        self.sample_size = int(self.opt("sample"))

    def finish(self, sample: Sample) -> Reading:
        texts = self.texts(sample)
        if not texts:
            return self.no_text()
        grams: list[tuple[Any, list[tuple[str, str, str]]]] = []
        for sid, text in texts:
            w = words(text)
            grams.append((sid, list(zip(w, w[1:], w[2:], strict=False))))
        df: Counter[tuple[str, str, str]] = Counter(chain.from_iterable(set(tri) for _, tri in grams))
        limit = max(1.0, float(self.opt("threshold")) * len(texts))
        common = {t for t, c in df.items() if c > limit}
        total = sum(len(t) for _, t in grams)
        if not total:
            return Reading(None, len(texts), len(texts), reason="no text of three words or more", error=True)
        hits = [(sum(map(common.__contains__, tri)), len(tri), sid) for sid, tri in grams if tri]
        per_rec = sorted(((h / k, sid) for h, k, sid in hits), key=lambda x: (-x[0], str(x[1])))
        repeated = sum(h for h, _, _ in hits)
        top = sorted(((c, " ".join(t)) for t, c in df.items() if t in common), key=lambda x: (-x[0], x[1]))
        details = {
            "trigrams": total,
            "common_trigrams": len(common),
            "doc_share_limit": self.opt("threshold"),
            "top": [{"trigram": t, "doc_share": round(c / len(texts), 4)} for c, t in top[:10]],
        }
        examples = [{"sample_id": sid, "share": round(s, 4)} for s, sid in per_rec[:EXAMPLES] if s > 0]
        reason = f"most shared: {top[0][1]!r} in {top[0][0] / len(texts):.1%} of records" if top else ""
        return Reading(round(repeated / total, 4), len(texts), len(texts), details, examples, reason)


def mattr(tokens: list[str], window: int) -> float | None:
    """Moving-average type-token ratio; a text shorter than the window is one window."""
    if not tokens:
        return None
    if len(tokens) <= window:
        return len(set(tokens)) / len(tokens)
    counts: dict[str, int] = {}
    get = counts.get
    for t in tokens[:window]:
        counts[t] = get(t, 0) + 1
    distinct = len(counts)
    total = distinct
    for out, new in zip(tokens, tokens[window:], strict=False):  # slide by one word
        if out != new:
            c = counts[out] - 1
            counts[out] = c
            distinct -= c == 0
            c = get(new, 0)
            counts[new] = c + 1
            distinct += c == 0
        total += distinct
    return total / (len(tokens) - window + 1) / window


class Mattr(Meter):
    def __init__(self, spec: GateSpec, field: str | None) -> None:
        super().__init__(spec, field)
        self.sample_size = int(self.opt("sample"))

    def finish(self, sample: Sample) -> Reading:
        window = int(self.opt("window"))
        scores = []
        for sid, text in self.texts(sample):
            s = mattr(words(text), window)
            if s is not None:
                scores.append((s, sid))
        if not scores:
            return self.no_text()
        scores.sort(key=lambda x: (x[0], str(x[1])))
        examples = [{"sample_id": sid, "mattr": round(s, 4)} for s, sid in scores[:EXAMPLES]]
        value = sum(s for s, _ in scores) / len(scores)
        return Reading(round(value, 4), len(scores), len(scores), {"window": window}, examples)


class StarterVariety(Meter):
    def __init__(self, spec: GateSpec, field: str | None) -> None:
        super().__init__(spec, field)
        self.sample_size = int(self.opt("sample"))

    def finish(self, sample: Sample) -> Reading:
        k = int(self.opt("words"))
        starters: Counter[str] = Counter()
        ids: dict[str, list[Any]] = {}
        texts = self.texts(sample)
        used = 0
        for sid, text in texts:  # a fixed number of sentences: the share does not drift with N
            if sum(starters.values()) >= STARTER_SENTENCES:
                break
            used += 1
            for sentence in _SENTENCE.split(text.strip()):
                w = words(sentence)[:k]
                if w:
                    key = " ".join(w)
                    starters[key] += 1
                    if len(ids.setdefault(key, [])) < 3:
                        ids[key].append(sid)
        n = sum(starters.values())
        if not n:
            return self.no_text()
        top = sorted(starters.items(), key=lambda kv: (-kv[1], kv[0]))
        examples = [{"starter": s, "share": round(c / n, 4), "sample_ids": ids[s]} for s, c in top[:EXAMPLES]]
        details = {"sentences": n, "distinct": len(starters), "words": k}
        return Reading(
            round(len(starters) / n, 4),
            used,
            used,
            details,
            examples,
            reason=f"most common starter: {top[0][0]!r} in {top[0][1] / n:.1%} of sentences",
        )


class Skips:
    """Algorithm L (Li, 1994): which arrivals enter a reservoir of ``size``, and at which place.

    After the first ``size`` arrivals it draws how many to skip, so the cost per arrival is a
    counter, not a random number. The sample is uniform and, from a fixed seed, the same every run.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seen = 0
        self.rng = random.Random(seed)
        self.w = 1.0
        self.next = size

    def _skip(self) -> None:
        self.w *= math.exp(math.log(self.rng.random() or 1e-300) / self.size)
        gap = math.log(self.rng.random() or 1e-300) / math.log1p(-self.w) if self.w < 1 else math.inf
        self.next += int(gap) + 1 if math.isfinite(gap) and gap < 1 << 62 else 1 << 62

    def place(self) -> int | None:
        """Count one arrival: the reservoir index it goes to (append when == len), or None."""
        self.seen += 1
        if self.seen <= self.size:
            if self.seen == self.size:
                self._skip()
            return self.seen - 1
        if self.seen == self.next:
            self._skip()
            return self.rng.randrange(self.size)
        return None


class AnchorTally:
    """Records per anchor of one field, counted once for all the anchor meters of that field."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.counts: Counter[str] = Counter()
        self.ids: dict[str, list[Any]] = {}
        self.items = 0

    def add(self, rec: dict[str, Any], sid: Any, cache: dict[str, Any]) -> None:
        anchors = cache[self.field] = anchor_list(rec.get(self.field))
        if not anchors:
            return
        self.items += 1
        for a in anchors:
            self.counts[a] += 1
            ids = self.ids.get(a)
            if ids is None:
                self.ids[a] = [sid]
            elif len(ids) < EXAMPLES:
                ids.append(sid)


class AnchorMeter(Meter):
    """An anchor metric: reads the field's shared :class:`AnchorTally` (set by the board)."""

    tally: AnchorTally

    def add(self, rec: dict[str, Any], sid: Any, cache: dict[str, Any]) -> None:
        anchors = cache.get(self.field or "")  # the tally ran first
        if anchors:
            self.more(anchors, rec, sid)

    def more(self, anchors: list[str], rec: dict[str, Any], sid: Any) -> None:
        """What a subclass counts beside the tally."""

    @property
    def streaming(self) -> bool:
        return type(self).more is not AnchorMeter.more

    @property
    def items(self) -> int:
        return self.tally.items

    @property
    def ids(self) -> dict[str, list[Any]]:
        return self.tally.ids

    def ranked(self) -> list[tuple[str, int]]:
        return sorted(self.tally.counts.items(), key=lambda kv: (-kv[1], kv[0]))

    def none(self) -> Reading:
        return Reading(None, reason=f"no record has anchors in field {self.field!r}", error=True)


class AnchorShare(AnchorMeter):
    def finish(self, sample: Sample) -> Reading:
        if not self.items:
            return self.none()
        ranked = self.ranked()
        n = self.items
        _, critical = gatekinds.bounds(self.spec)
        top = [{"anchor": a, "count": c, "share": round(c / n, 4)} for a, c in ranked[: int(self.opt("top"))]]
        over = [a for a, c in ranked if c / n > critical]
        worst, wc = ranked[0]
        examples = [
            {"anchor": a, "share": round(c / n, 4), "sample_ids": self.ids[a]}
            for a, c in ranked[: max(1, min(EXAMPLES, len(over)))]
        ]
        details = {"anchors": len(ranked), "top": top, "over_cap": len(over), "cap": critical}
        return Reading(
            round(wc / n, 4),
            n,
            None,
            details,
            examples,
            reason=f"anchor {worst!r} in {wc / n:.1%} of records ({wc:,} of {n:,})",
        )


class RareAnchorCompliance(AnchorMeter):
    def __init__(self, spec: GateSpec, field: str | None) -> None:
        super().__init__(spec, field)
        self.combos: Counter[frozenset[str]] | None = Counter()
        self.combo_id: dict[frozenset[str], Any] = {}
        self.reservoir: list[tuple[Any, frozenset[str]]] = []
        self.skips = Skips(COMBO_SAMPLE, COMBO_SAMPLE)

    def more(self, anchors: list[str], rec: dict[str, Any], sid: Any) -> None:
        combo = frozenset(anchors)
        at = self.skips.place()
        if at is not None:
            if at == len(self.reservoir):
                self.reservoir.append((sid, combo))
            else:
                self.reservoir[at] = (sid, combo)
        if self.combos is None:
            return
        if combo not in self.combos and len(self.combos) >= MAX_COMBOS:
            self.combos = None  # too many distinct sets to count exactly: the reservoir answers
            self.combo_id.clear()
            return
        self.combos[combo] += 1
        self.combo_id.setdefault(combo, sid)

    def finish(self, sample: Sample) -> Reading:
        if not self.items:
            return self.none()
        k = int(self.opt("top"))
        ranked = self.ranked()
        common = {a for a, _ in ranked[:k]}
        rare = len(ranked) - len(common)
        if self.combos is not None:
            groups = [(c, combo, self.combo_id[combo]) for combo, c in self.combos.items()]
            sampled = None
        else:
            groups = [(1, combo, sid) for sid, combo in self.reservoir]
            sampled = len(groups)
        total = sum(c for c, _, _ in groups)
        compliant = sum(c for c, combo, _ in groups if combo - common)
        failing = sorted(
            ((c, sorted(combo), sid) for c, combo, sid in groups if not combo - common), key=lambda x: (-x[0], x[1])
        )
        examples = [{"anchors": a, "records": c, "sample_ids": [sid]} for c, a, sid in failing[:EXAMPLES]]
        details = {"anchors": len(ranked), "common": len(common), "rare_anchors": rare, "top": k}
        reason = (
            f"only {len(ranked)} distinct anchors: none is outside the top {k}"
            if not rare
            else f"{total - compliant:,} of {total:,} records hold only top-{k} anchors"
        )
        return Reading(round(compliant / total, 4), self.items, sampled, details, examples, reason)


class AnchorRegionMI(AnchorMeter):
    def __init__(self, spec: GateSpec, field: str | None) -> None:
        super().__init__(spec, field)
        self.pairs: Counter[tuple[str, Any]] = Counter()
        self.pair_id: dict[tuple[str, Any], Any] = {}

    def more(self, anchors: list[str], rec: dict[str, Any], sid: Any) -> None:
        by = rec.get(self.spec.by or "")
        if by is None:
            return
        b = _key(by)
        for a in anchors:
            self.pairs[(a, b)] += 1
            self.pair_id.setdefault((a, b), sid)

    def finish(self, sample: Sample) -> Reading:
        if not self.pairs:
            return Reading(
                None, reason=f"no record has both anchors in {self.field!r} and a {self.spec.by!r}", error=True
            )
        a_counts: Counter[str] = Counter()
        b_counts: Counter[Any] = Counter()
        for (a, b), c in self.pairs.items():
            a_counts[a] += c
            b_counts[b] += c
        n = sum(self.pairs.values())
        h_b = entropy(b_counts)
        if h_b == 0:
            return Reading(None, self.items, reason=f"{self.spec.by!r} has one value: nothing to depend on", error=True)
        mi = sum((c / n) * math.log2(c * n / (a_counts[a] * b_counts[b])) for (a, b), c in self.pairs.items())
        spread: dict[str, dict[str, int]] = {}
        for (a, b), c in self.pairs.items():
            spread.setdefault(a, {})[str(b)] = c
        worst = sorted(spread.items(), key=lambda kv: (-entropy(kv[1]), kv[0]))
        examples = [
            {
                "anchor": a,
                "by": dict(sorted(d.items(), key=lambda kv: -kv[1])[:5]),
                "sample_ids": [self.pair_id[(a, b)] for (a2, b) in self.pairs if a2 == a][:3],
            }
            for a, d in worst[:EXAMPLES]
            if len(d) > 1
        ]
        details = {
            "mutual_information_bits": round(mi, 4),
            "entropy_by_bits": round(h_b, 4),
            "by": self.spec.by,
            "anchors": len(a_counts),
            "by_values": len(b_counts),
        }
        multi = sum(1 for d in spread.values() if len(d) > 1)
        return Reading(
            round(mi / h_b, 4),
            self.items,
            None,
            details,
            examples,
            reason=f"{multi} of {len(spread)} anchors occur in more than one {self.spec.by}",
        )


class NearDupUniqueness(Meter):
    """MinHash signatures of a deterministic sample, made as records stream by (dedup's method)."""

    def __init__(self, spec: GateSpec, field: str | None) -> None:
        super().__init__(spec, field)
        self.size = int(self.opt("sample"))
        self.skips = Skips(self.size, self.size)
        self.sigs: list[tuple[int, Any, Any]] = []  # (arrival, sample_id, signature)
        self.have_rensa = importlib.util.find_spec("rensa") is not None
        if self.have_rensa:
            from datamill.quality.dedup.minhash import signature

            self.signature = signature

    def add(self, rec: dict[str, Any], sid: Any, cache: dict[str, Any]) -> None:
        text = rec.get(self.field or "")
        if not isinstance(text, str) or not self.have_rensa:
            return
        at = self.skips.place()
        if at is None:
            return
        item = (self.skips.seen, sid, self.signature(text))
        if at == len(self.sigs):
            self.sigs.append(item)
        else:
            self.sigs[at] = item

    def finish(self, sample: Sample) -> Reading:
        if not self.have_rensa:
            return Reading(None, reason="needs rensa: pip install 'datamill[quality]'", error=True)
        if not self.sigs:
            return self.no_text()
        from datamill.quality.dedup.base import clusters
        from datamill.quality.dedup.minhash import MinHash

        threshold = float(self.opt("threshold"))
        sigs = sorted(self.sigs, key=lambda x: x[0])  # arrival order: the first of a cluster is kept
        rejected = {
            i: g[0] for g in clusters(len(sigs), MinHash(threshold).pairs_of([s for _, _, s in sigs])) for i in g[1:]
        }
        examples = [
            {"sample_id": sigs[i][1], "near_duplicate_of": sigs[keep][1]}
            for i, keep in sorted(rejected.items())[:EXAMPLES]
        ]
        details = {"rejected": len(rejected), "threshold": threshold}
        n = len(sigs)
        reason = f"{len(rejected):,} of {n:,} sampled records are near-duplicates" if rejected else ""
        return Reading(round(1 - len(rejected) / n, 4), n, n, details, examples, reason)


class RepairRate(Meter):
    """Reads the run's attempt log when finished; ``field`` (optional) names the LLM columns."""

    attempts: Path | None = None  # set by the board: the run dir's logs/attempts.jsonl

    def finish(self, sample: Sample) -> Reading:
        path = self.attempts
        if path is None or not path.is_file():
            return Reading(None, reason="no LLM attempt log (logs/attempts.jsonl): not a run dir, or no LLM column")
        columns = set(self.spec.field_list)
        status: Counter[str] = Counter()
        repairs: Counter[str] = Counter()
        examples: list[dict[str, Any]] = []
        with open(path, "rb") as f:
            for line in f:
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if columns and row.get("column") not in columns:
                    continue
                s = row.get("status")
                status[s] += 1
                if s == "repaired":
                    repairs.update(row.get("repairs") or [])
                    if len(examples) < EXAMPLES:
                        examples.append(
                            {"slot": row.get("slot"), "column": row.get("column"), "repairs": row.get("repairs") or []}
                        )
        answered = status["ok"] + status["repaired"]
        if not answered:
            return Reading(
                None, reason="no answered LLM attempt in the log" + (f" for {sorted(columns)}" if columns else "")
            )
        details = {
            "answered": answered,
            "repaired": status["repaired"],
            "repairs": dict(sorted(repairs.items())),
            "statuses": dict(sorted((str(k), v) for k, v in status.items())),
        }
        return Reading(
            round(status["repaired"] / answered, 4),
            answered,
            None,
            details,
            examples,
            reason=f"{status['repaired']:,} of {answered:,} answered attempts repaired",
        )


_LEXICONS: dict[tuple[Any, ...], Polarity] = {}


class Polarity:
    """Word -> +1 / -1 / 0 from a lexicon; ``*`` entries match by prefix. Memoised per word."""

    MEMO = 200_000

    def __init__(self, lex: Lexicon) -> None:
        self.exact: dict[str, int] = {}
        self.prefixes: list[tuple[str, int]] = []
        for words_, sign in ((lex.negative, -1), (lex.positive, 1)):  # positive wins a tie
            for w in words_:
                key = w.translate(FOLD).lower()
                if key.endswith("*"):
                    self.prefixes.append((key[:-1], sign))
                else:
                    self.exact[key] = sign
        self.prefixes.sort(key=lambda p: -len(p[0]))  # the longest prefix decides
        self.memo: dict[str, int] = {}

    def __call__(self, word: str) -> int:
        got = self.memo.get(word)
        if got is not None:
            return got
        key = word.translate(FOLD)
        sign = self.exact.get(key)
        if sign is None:
            sign = next((s for p, s in self.prefixes if key.startswith(p)), 0)
        if len(self.memo) < self.MEMO:
            self.memo[word] = sign
        return sign


def polarity(languages: list[str], extra: str | None) -> Polarity:
    key = (tuple(languages), extra)
    got = _LEXICONS.get(key)
    if got is None:
        lex = Lexicon((), ())
        for lang in languages:
            lex = lex.merged(load_lexicon(DATA / f"lexicon.{lang}.yaml"))
        if extra:
            lex = lex.merged(load_lexicon(extra))
        got = _LEXICONS[key] = Polarity(lex)
    return got


SCORE_EDGES = [round(-0.2 + 0.05 * i, 2) for i in range(12)]  # -0.2 .. 0.35, for the report's histogram


class Pollyanna(Meter):
    def __init__(self, spec: GateSpec, field: str | None) -> None:
        super().__init__(spec, field)
        self.sample_size = int(self.opt("sample"))
        self.polarity = polarity(list(spec.languages or gatekinds.LANGUAGES), spec.lexicon)

    def score(self, text: str) -> tuple[float | None, list[str]]:
        w = words(text)
        if not w:
            return None, []
        pos: list[str] = []
        net = 0
        memo, look = self.polarity.memo, self.polarity
        for x in w:
            s = memo.get(x)
            if s is None:
                s = look(x)
            if s:
                net += s
                if s > 0:
                    pos.append(x)
        return net / len(w), pos

    def finish(self, sample: Sample) -> Reading:
        threshold = float(self.opt("threshold"))
        scored = []
        hist = [0] * (len(SCORE_EDGES) + 1)
        for sid, text in self.texts(sample):
            s, pos = self.score(text)
            if s is None:
                continue
            scored.append((s, sid, pos))
            hist[sum(1 for e in SCORE_EDGES if s >= e)] += 1
        if not scored:
            return self.no_text()
        positive = [x for x in scored if x[0] >= threshold]
        positive.sort(key=lambda x: (-x[0], str(x[1])))
        examples = [
            {"sample_id": sid, "score": round(s, 4), "positive_words": pos[:8]} for s, sid, pos in positive[:EXAMPLES]
        ]
        details = {
            "threshold": threshold,
            "mean_score": round(sum(s for s, _, _ in scored) / len(scored), 4),
            "score_edges": SCORE_EDGES,
            "score_counts": hist,
        }
        return Reading(
            round(len(positive) / len(scored), 4),
            len(scored),
            len(scored),
            details,
            examples,
            reason=f"{len(positive):,} of {len(scored):,} sampled records score >= {threshold:g}",
        )


METERS: dict[str, type[Meter]] = {
    "opening_entropy": OpeningEntropy,
    "trigram_repetition": TrigramRepetition,
    "mattr": Mattr,
    "starter_variety": StarterVariety,
    "anchor_share": AnchorShare,
    "rare_anchor_compliance": RareAnchorCompliance,
    "anchor_region_mi": AnchorRegionMI,
    "near_dup_uniqueness": NearDupUniqueness,
    "repair_rate": RepairRate,
    "pollyanna": Pollyanna,
}


def meters(spec: GateSpec) -> list[Meter]:
    """The meters of one dashboard gate: one per field (one in all for repair_rate)."""
    assert spec.dashboard is not None
    cls = METERS[spec.dashboard]
    if spec.dashboard == "repair_rate":
        return [cls(spec, None)]
    return [cls(spec, f) for f in spec.field_list]
