"""Safety and ethics gates (seed 003), one checker per ``{safety: NAME}`` gate, fed every record.

- ``stereotypes``: generalising claims about a group ("Romanians are lazy", "Femeile sunt
  slabe") found by the pattern packs shipped in ``data/stereotypes.LANG.yaml`` (English and
  Romanian), plus a user file; every record is scanned, the value is the share of records with
  a claim. Text is matched case-insensitively with diacritics folded.
- ``determinism``: within each group of a protected field (an ethnicity, a religion), no value of
  an attribute (occupation, education) may exceed ``max_share``; groups under ``min_group``
  records are skipped and listed.
- ``fairness``: each value of an attribute holds its share of a target table (a CSV with a
  weight column) within ``tolerance`` (relative). With ``given`` the table is conditional and the
  expected count of a value is the sum, over records, of its probability given the record's
  ``given`` values. Values whose expected count is under ``min_expected`` (default
  ``ceil(9 / tolerance^2)``: the tolerance is then at least three standard deviations of an
  honest sampler's count) are listed as not tested.

Memory: counters over distinct (group, value) pairs and a few sample_ids per pair; flat in N.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datamill.quality.dashboard import DATA, EXAMPLES, Reading, _key
from datamill.recipe import gatekinds
from datamill.recipe.gatekinds import FOLD, PatternPack, load_patterns
from datamill.recipe.model import GateSpec
from datamill.recipe.tables import load_table

# Punctuation to spaces (and diacritics folded) for the prefilter's word split; only a superset
# test: a text whose words miss every group word of a pack cannot match its patterns.
_SPLIT: dict[int, Any] = str.maketrans(
    {**FOLD, **{ord(c): " " for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~„“”‘’‚«»‹›—–…·•¡¿"}}
)


# The same for ASCII text, as bytes: twice as fast, and most text is ASCII.
_SPLIT_ASCII = bytes(
    32 if chr(i) in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~" else ord(chr(i).lower()) for i in range(128)
) + bytes(range(128, 256))


@dataclass(frozen=True)
class _Pack:
    language: str
    keys: frozenset[str]  # the longest word of each group entry
    prefixes: tuple[str, ...]  # group entries ending in *
    patterns: list[tuple[re.Pattern[str], dict[str, str]]]
    keys_ascii: frozenset[bytes]
    prefixes_ascii: tuple[bytes, ...]

    def may_match(self, words: list[str] | list[bytes], ascii_: bool) -> bool:
        """Whether a text of these words may hold a claim (False: it cannot)."""
        keys: frozenset[Any] = self.keys_ascii if ascii_ else self.keys
        if not keys.isdisjoint(words):
            return True
        prefixes: tuple[Any, ...] = self.prefixes_ascii if ascii_ else self.prefixes
        return bool(prefixes) and any(w.startswith(prefixes) for w in words)


_PACKS: dict[tuple[Any, ...], list[_Pack]] = {}


def _packs(languages: list[str], extra: Path | None) -> list[_Pack]:
    """Per language: the prefilter's group words and the compiled claim patterns."""
    key = (tuple(languages), str(extra) if extra else None)
    got = _PACKS.get(key)
    if got is not None:
        return got
    packs: dict[str, PatternPack] = {lang: load_patterns(DATA / f"stereotypes.{lang}.yaml") for lang in languages}
    if extra is not None:
        user = load_patterns(extra)
        packs[user.language] = packs[user.language].merged(user) if user.language in packs else user
    out = []
    for lang, pack in packs.items():
        if not pack.patterns:
            continue
        keys, prefixes = set(), []
        for entry in (w for ws in pack.groups.values() for w in ws):
            folded = entry.translate(_SPLIT).lower()
            if folded.endswith("*"):
                prefixes.append(folded.rstrip("*").split()[-1] if " " in folded else folded.rstrip("*"))
            elif folded.split():
                keys.add(max(folded.split(), key=len))
        out.append(
            _Pack(
                lang,
                frozenset(keys),
                tuple(prefixes),
                pack.compiled(),
                frozenset(k.encode() for k in keys if k.isascii()),
                tuple(p.encode() for p in prefixes if p.isascii()),
            )
        )
    _PACKS[key] = out
    return out


def _sentence(text: str, start: int, end: int) -> str:
    """The sentence around ``text[start:end]``, at most ~240 characters."""
    lo = max(text.rfind(c, 0, start) for c in ".!?\n") + 1
    hi_cands = [i for i in (text.find(c, end) for c in ".!?\n") if i >= 0]
    hi = min(hi_cands) + 1 if hi_cands else len(text)
    lo, hi = max(lo, start - 120), min(hi, end + 120)
    return text[lo:hi].strip()


class Checker:
    """One safety gate, fed every record."""

    def __init__(self, spec: GateSpec, base_dir: Path) -> None:
        self.spec = spec
        self.base_dir = base_dir

    def opt(self, name: str) -> Any:
        return gatekinds.option(self.spec, name)

    def add(self, rec: dict[str, Any], sid: Any, cache: dict[str, Any]) -> None:
        raise NotImplementedError

    def finish(self) -> Reading:
        raise NotImplementedError


class Stereotypes(Checker):
    def __init__(self, spec: GateSpec, base_dir: Path) -> None:
        super().__init__(spec, base_dir)
        extra = gatekinds.resolve(spec.patterns, base_dir) if spec.patterns else None
        self.packs = _packs(list(spec.languages or gatekinds.LANGUAGES), extra)
        self.fields = spec.field_list
        # Every pack's group words at once: most texts name no group, and are done after one test.
        prefixed = any(p.prefixes for p in self.packs)
        self.any_key: frozenset[str] | None = None if prefixed else frozenset().union(*(p.keys for p in self.packs))
        self.any_key_ascii: frozenset[bytes] | None = (
            None if prefixed else frozenset().union(*(p.keys_ascii for p in self.packs))
        )
        self.items = self.flagged = 0
        self.by_category: Counter[str] = Counter()
        self.by_language: Counter[str] = Counter()
        self.examples: list[dict[str, Any]] = []

    def add(self, rec: dict[str, Any], sid: Any, cache: dict[str, Any]) -> None:
        found: dict[str, Any] | None = None
        seen = False
        for f in self.fields:
            text = rec.get(f)
            if not isinstance(text, str):
                continue
            seen = True
            ascii_ = text.isascii()
            tokens = text.encode().translate(_SPLIT_ASCII).split() if ascii_ else text.translate(_SPLIT).lower().split()
            union = self.any_key_ascii if ascii_ else self.any_key
            if union is not None and union.isdisjoint(tokens):
                continue
            folded = ""
            for pack in self.packs:
                if not pack.may_match(tokens, ascii_):
                    continue
                lang = pack.language
                folded = folded or text.translate(FOLD)  # one character for one: offsets hold in the original
                for pat, category in pack.patterns:
                    m = pat.search(folded)
                    if m is None:
                        continue
                    group = m.group("group").lower()
                    cat = category.get(group) or next((c for w, c in category.items() if group.startswith(w)), "?")
                    self.by_category[cat] += 1
                    self.by_language[lang] += 1
                    if found is None:
                        found = {
                            "sample_id": sid,
                            "field": f,
                            "language": lang,
                            "category": cat,
                            "match": text[m.start() : m.end()],
                            "text": _sentence(text, m.start(), m.end()),
                        }
                    break
        self.items += seen
        if found is not None:
            self.flagged += 1
            if len(self.examples) < EXAMPLES:
                self.examples.append(found)

    def finish(self) -> Reading:
        if not self.items:
            return Reading(None, reason=f"no record has a text in {self.fields}", error=True)
        details = {
            "records_flagged": self.flagged,
            "by_category": dict(self.by_category),
            "by_language": dict(self.by_language),
            "languages": [p.language for p in self.packs],
        }
        reason = ""
        if self.examples:
            ex = self.examples[0]
            reason = (
                f"{self.flagged:,} of {self.items:,} records make a stereotype claim, "
                f"e.g. {ex['sample_id']}: {ex['match']!r}"
            )
        return Reading(round(self.flagged / self.items, 6), self.items, None, details, self.examples, reason)


class Determinism(Checker):
    def __init__(self, spec: GateSpec, base_dir: Path) -> None:
        super().__init__(spec, base_dir)
        self.groups: Counter[tuple[str, Any]] = Counter()  # (protected field, value) -> records
        self.cells: Counter[tuple[str, Any, str, Any]] = Counter()  # (protected, value, attribute, value)
        self.ids: dict[tuple[str, Any, str, Any], list[Any]] = {}
        self.protected = list(spec.protected or [])
        self.attributes = list(spec.attributes or [])

    def add(self, rec: dict[str, Any], sid: Any, cache: dict[str, Any]) -> None:
        for p in self.protected:
            pv = rec.get(p)
            if pv is None:
                continue
            pk = pv if type(pv) is str else _key(pv)
            self.groups[(p, pk)] += 1
            for a in self.attributes:
                av = rec.get(a)
                if av is None:
                    continue
                cell = (p, pk, a, av if type(av) is str else _key(av))
                self.cells[cell] += 1
                ids = self.ids.setdefault(cell, [])
                if len(ids) < 3:
                    ids.append(sid)

    def finish(self) -> Reading:
        if not self.cells:
            return Reading(
                None,
                reason=f"no record has both a protected field {self.protected} and an attribute {self.attributes}",
                error=True,
            )
        limit, min_group = float(self.opt("max_share")), int(self.opt("min_group"))
        totals: Counter[tuple[str, Any, str]] = Counter()
        for (p, pk, a, _), c in self.cells.items():
            totals[(p, pk, a)] += c
        skipped = sorted({(p, str(pk), self.groups[(p, pk)]) for (p, pk, _), t in totals.items() if t < min_group})
        worst = 0.0
        violations = []
        for (p, pk, a, av), c in self.cells.items():
            t = totals[(p, pk, a)]
            if t < min_group:
                continue
            share = c / t
            worst = max(worst, share)
            if share > limit:
                violations.append(
                    {
                        "protected": p,
                        "group": pk,
                        "attribute": a,
                        "value": av,
                        "share": round(share, 4),
                        "count": c,
                        "group_size": t,
                        "sample_ids": self.ids[(p, pk, a, av)],
                    }
                )
        violations.sort(key=lambda v: (-v["share"], str(v["group"]), v["attribute"]))
        tested = len({(p, pk) for (p, pk, _), t in totals.items() if t >= min_group})
        details = {
            "groups_tested": tested,
            "max_share": limit,
            "min_group": min_group,
            "skipped": [{"protected": p, "group": g, "size": n} for p, g, n in skipped],
            "violations": violations,
        }
        reason = ""
        if violations:
            v = violations[0]
            reason = (
                f"{v['protected']}={v['group']}: {v['attribute']}={v['value']!r} in {v['share']:.1%} of the group "
                f"({v['count']} of {v['group_size']}; max {limit:g})"
            )
            if len(violations) > 1:
                reason += f"; {len(violations) - 1} more"
        if skipped:
            reason += ("; " if reason else "") + f"{len(skipped)} groups under {min_group} records not tested"
        if not tested:
            return Reading(
                None,
                sum(totals.values()),
                details=details,
                reason=f"no group has {min_group} records or more: nothing tested (lower min_group)",
                error=True,
            )
        examples = [
            {k: v[k] for k in ("protected", "group", "attribute", "value", "share", "sample_ids")}
            for v in violations[:EXAMPLES]
        ]
        return Reading(round(worst, 4), sum(self.groups.values()), None, details, examples, reason)


class Fairness(Checker):
    def __init__(self, spec: GateSpec, base_dir: Path) -> None:
        super().__init__(spec, base_dir)
        assert spec.attribute is not None and spec.table is not None
        self.attribute = spec.attribute
        self.given = spec.given_map  # table column -> record field
        self.given_fields = list(self.given.values())
        table = load_table(gatekinds.resolve(spec.table, base_dir))
        ai, wi = table.col(spec.attribute), table.col(str(self.opt("weight")))
        gi = [table.col(c) for c in self.given]
        # P(value | given values), from the table's weights (a joint table works too: it is summed).
        sums: dict[tuple[str, ...], dict[str, float]] = {}
        for row in table.rows:
            cell = sums.setdefault(tuple(row[i] for i in gi), {})
            cell[row[ai]] = cell.get(row[ai], 0.0) + float(row[wi])
        self.cond = {g: {v: w / sum(c.values()) for v, w in c.items()} for g, c in sums.items() if sum(c.values()) > 0}
        self.values = list(dict.fromkeys(row[ai] for row in table.rows))
        self.observed: Counter[str] = Counter()
        self.cells: Counter[tuple[str, ...]] = Counter()  # records per combination of given values
        self.ids: dict[str, list[Any]] = {}
        self.unmatched = 0
        self.unmatched_ids: list[Any] = []
        self.missing = 0

    def add(self, rec: dict[str, Any], sid: Any, cache: dict[str, Any]) -> None:
        value = rec.get(self.attribute)
        if value is None:
            self.missing += 1
            return
        g: tuple[str, ...]
        if len(self.given_fields) == 1:  # the common case, without a generator
            x = rec.get(self.given_fields[0])
            g = (x if type(x) is str else "" if x is None else str(x),)
        else:
            g = tuple("" if (x := rec.get(f)) is None else str(x) for f in self.given_fields)
        if g not in self.cond:
            self.unmatched += 1
            if len(self.unmatched_ids) < EXAMPLES:
                self.unmatched_ids.append(sid)
            return
        v = value if type(value) is str else str(value)
        self.observed[v] += 1
        self.cells[g] += 1
        ids = self.ids.setdefault(v, [])
        if len(ids) < EXAMPLES:
            ids.append(sid)

    def finish(self) -> Reading:
        n = sum(self.observed.values())
        if not n:
            why = (
                f"no record has field {self.attribute!r}"
                if not self.unmatched
                else (f"no record's {list(self.given.values())} is in the table")
            )
            return Reading(None, reason=why, error=True)
        tol = float(self.opt("tolerance"))
        min_expected = self.spec.min_expected if self.spec.min_expected is not None else math.ceil(9 / tol**2)
        expected: dict[str, float] = {}
        for g, c in self.cells.items():
            for v, p in self.cond[g].items():
                expected[v] = expected.get(v, 0.0) + c * p
        rows: list[dict[str, Any]] = []
        violations: list[dict[str, Any]] = []
        worst = 0.0
        for v in [*self.values, *sorted(set(self.observed) - set(self.values))]:
            e, o = expected.get(v, 0.0), self.observed.get(v, 0)
            gap = (o - e) / e if e > 0 else (math.inf if o else 0.0)
            tested = e >= min_expected or (e == 0 and o > 0)
            row = {
                "value": v,
                "observed": o,
                "observed_share": round(o / n, 6),
                "expected": round(e, 2),
                "expected_share": round(e / n, 6),
                "relative_gap": round(gap, 4) if math.isfinite(gap) else None,
                "tested": tested,
            }
            rows.append(row)
            if not tested:
                continue
            if math.isfinite(gap):
                worst = max(worst, abs(gap))
            if abs(gap) > tol:
                violations.append({**row, "sample_ids": self.ids.get(v, [])})
        violations.sort(key=lambda r: -(abs(r["relative_gap"]) if r["relative_gap"] is not None else math.inf))
        untested = [r["value"] for r in rows if not r["tested"]]
        details = {
            "attribute": self.attribute,
            "given": list(self.given),
            "tolerance": tol,
            "min_expected": min_expected,
            "rows": rows,
            "untested": untested,
            "violations": violations,
            "unmatched": self.unmatched,
            "missing": self.missing,
        }
        reasons = []
        if violations:
            r = violations[0]
            exp = f"expected {r['expected_share']:.2%}" if r["expected"] else "not in the table"
            reasons.append(
                f"{self.attribute}={r['value']!r}: observed {r['observed_share']:.2%}, {exp}"
                + (f" ({r['relative_gap']:+.1%}, tolerance ±{tol:.0%})" if r["relative_gap"] is not None else "")
            )
            if len(violations) > 1:
                reasons.append(f"{len(violations) - 1} more")
        if self.unmatched:
            reasons.append(
                f"{self.unmatched:,} records have {list(self.given.values())} values the table lacks, "
                f"e.g. {self.unmatched_ids[0]}"
            )
        if untested:
            reasons.append(f"{len(untested)} values expected under {min_expected:g} records not tested")
        examples = [
            {
                "value": r["value"],
                "observed_share": r["observed_share"],
                "expected_share": r["expected_share"],
                "sample_ids": r["sample_ids"],
            }
            for r in violations[:EXAMPLES]
        ]
        if self.unmatched:
            examples.append({"unmatched": self.unmatched, "sample_ids": self.unmatched_ids})
        reading = Reading(round(worst, 4), n, None, details, examples, "; ".join(reasons))
        # Values the table does not have, and records it cannot judge, fail the gate whatever the gaps.
        reading.error = bool(self.unmatched) or any(r["relative_gap"] is None for r in violations)
        return reading


CHECKERS: dict[str, type[Checker]] = {"stereotypes": Stereotypes, "determinism": Determinism, "fairness": Fairness}
