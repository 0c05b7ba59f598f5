"""Dataset metrics over any text or categorical field (seed 003's quality dashboard).

Each function takes plain Python values and returns a number, so every metric can be a gate.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_WORD = re.compile(r"[A-Za-z0-9']+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")

# seed 003's collapse indicators: (healthy if ..., warning if ..., else critical)
COLLAPSE = {
    "opening_entropy": {"healthy": (">", 2.0), "warning": (">=", 1.5)},
    "repair_rate": {"healthy": ("<", 0.10), "warning": ("<=", 0.20)},
    "anchor_diversity": {"healthy": (">", 0.8), "warning": (">=", 0.6)},
    "trigram_repetition": {"healthy": ("<", 0.10), "warning": ("<=", 0.20)},
}


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def entropy(counts: Counter[Any]) -> float:
    total = sum(counts.values())
    if not total:
        return 0.0
    return -sum((n / total) * math.log2(n / total) for n in counts.values() if n)


def first_words(texts: Iterable[str], k: int = 1) -> Counter[str]:
    out: Counter[str] = Counter()
    for t in texts:
        w = words(t)[:k]
        if w:
            out[" ".join(w)] += 1
    return out


def opening_entropy(texts: Sequence[str]) -> float:
    """Entropy (bits) of the first-word distribution: low means every item opens the same way."""
    return entropy(first_words(texts))


def trigram_repetition(texts: Sequence[str]) -> float:
    """Share of word trigrams that repeat one seen before, across the field."""
    seen: set[tuple[str, ...]] = set()
    total = repeats = 0
    for t in texts:
        w = words(t)
        for i in range(len(w) - 2):
            tri = (w[i], w[i + 1], w[i + 2])
            total += 1
            if tri in seen:
                repeats += 1
            else:
                seen.add(tri)
    return repeats / total if total else 0.0


def lexical_diversity(texts: Sequence[str]) -> float:
    """Distinct words over words (type-token ratio) across the field."""
    vocab: set[str] = set()
    total = 0
    for t in texts:
        w = words(t)
        total += len(w)
        vocab.update(w)
    return len(vocab) / total if total else 0.0


def starter_variety(texts: Sequence[str]) -> float:
    """Distinct sentence-opening words over sentences."""
    starters: Counter[str] = Counter()
    for t in texts:
        for s in _SENTENCE.split(t.strip()):
            w = words(s)
            if w:
                starters[w[0]] += 1
    total = sum(starters.values())
    return len(starters) / total if total else 0.0


def uniqueness(values: Sequence[Any]) -> float:
    """Distinct values over values."""
    return len({repr(v) for v in values}) / len(values) if values else 1.0


def top_k_share(values: Sequence[Any], k: int = 10) -> float:
    """Share of items holding one of the k most frequent values (anchor overuse)."""
    return top_k_share_of_counts(Counter(repr(v) for v in values), k)


def top_k_share_of_counts(counts: Mapping[Any, int], k: int = 10, skip: Any = None) -> float:
    """:func:`top_k_share` from a value -> count table (values apart by ``repr``); ``skip`` (an
    "other" bucket) counts in the total but is not a value."""
    total = sum(counts.values())
    if not total:
        return 0.0
    by_repr: Counter[str] = Counter()
    for v, c in counts.items():
        if skip is None or v != skip:
            by_repr[repr(v)] += c
    return sum(n for _, n in by_repr.most_common(k)) / total


def mutual_information(a: Sequence[Any], b: Sequence[Any]) -> float:
    """Mutual information (bits) between two categorical fields."""
    n = len(a)
    if not n:
        return 0.0
    ca, cb = Counter(map(repr, a)), Counter(map(repr, b))
    cab = Counter(zip(map(repr, a), map(repr, b), strict=True))
    return sum((nab / n) * math.log2((nab * n) / (ca[x] * cb[y])) for (x, y), nab in cab.items())


def category_balance(counts: Counter[Any], targets: dict[Any, float]) -> float:
    """Largest absolute gap between a category's share and its target share."""
    total = sum(counts.values())
    tsum = sum(targets.values())
    if not total or not tsum:
        return 0.0
    return max(abs(counts.get(k, 0) / total - w / tsum) for k, w in targets.items())


def collapse_level(metric: str, value: float | None) -> str | None:
    """``healthy`` / ``warning`` / ``critical`` for a collapse indicator, None if unknown."""
    rule = COLLAPSE.get(metric)
    if rule is None or value is None:
        return None
    for level in ("healthy", "warning"):
        op, bound = rule[level]
        if (
            (op == ">" and value > bound)
            or (op == ">=" and value >= bound)
            or (op == "<" and value < bound)
            or (op == "<=" and value <= bound)
        ):
            return level
    return "critical"
