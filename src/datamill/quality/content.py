"""Content checks on marked spans, declared as gates (``check:``) by any recipe.

- ``grounded``: every figure in a span (a number: ``1,234``, ``4.2``, the parts of ``2025-03-02``
  or ``05:22``) appears in the context. With ``within: line``, they must also all be in the line
  the span is about: the context line that shares the most words (figures aside) with the span,
  or any of those on a tie. A figure taken from another line is a fact attributed to the wrong
  thing. A span without figures is grounded.
- ``relevant``: a span names the question's key terms. Key terms are the question's words that
  also occur in the context (stop words dropped, plurals folded): a word the context never uses
  cannot be cited, so it does not count. A question of several sentences is several parts; a
  span is scored against the part it covers best: the share of that part's key terms it names.
  It is relevant when that share is at least ``min_overlap``.
- ``distinct_spans``: no span repeats an earlier span of its item (case, spacing and
  punctuation ignored).

Each check's metric is the share of spans that pass; the report adds counts and examples of
spans that failed, with the reason.
"""

from __future__ import annotations

import re
from typing import Any

from datamill.recipe.model import GateSpec, TextSource

EXAMPLES = 5
_FIGURE = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")
_WORD = re.compile(r"[a-z0-9]+")
_NON_WORD = re.compile(r"[^a-z0-9]+")
STOP_WORDS = frozenset(  # function words, and the words of asking itself
    """a about above after again against all also am an and any are as at be been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers him his how i if in into is it its itself just let me more most my no nor
    not now of off on once only or other our out over own please same she should so some such than that
    the their them then there these they this those through to too under until up very was we were what
    when where which while who whom why will with would you your yours tell give find need want know
    like looking curious back many much get got show say said according""".split()  # noqa: SIM905
)


def figure(text: str) -> str:
    """One figure, normalised: no thousands commas, no leading or trailing zeros."""
    s = text.replace(",", "")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s.lstrip("0") or "0"


def figures(text: str) -> set[str]:
    return {figure(m) for m in _FIGURE.findall(text)}


def _stem(w: str) -> str:
    if w.isdigit():
        return w.lstrip("0") or "0"
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def terms(text: str) -> set[str]:
    """Content words of ``text``: lower-cased, stop words and one-letter words dropped, plurals folded."""
    return {_stem(w) for w in _WORD.findall(text.lower()) if w not in STOP_WORDS and (len(w) > 1 or w.isdigit())}


def _norm_span(text: str) -> str:
    return _NON_WORD.sub(" ", text.lower()).strip()


def texts(source: TextSource, rec: dict[str, Any]) -> list[str]:
    """The texts ``source`` names in ``rec``: a field's value, or the matches of its pattern."""
    value = rec.get(source.field)
    if not isinstance(value, str):
        return []
    if source.pattern is None:
        return [value]
    pat = _compiled(source.pattern)
    # the first group that took part in the match (patterns may offer alternatives), else the match
    return [next((g for g in m.groups() if g is not None), m.group(0)) for m in pat.finditer(value)]


def cached_texts(source: TextSource, rec: dict[str, Any], cache: dict[Any, Any]) -> list[str]:
    """:func:`texts`, once per record and source however many checks read it."""
    got = cache.get(source)
    if got is None:
        got = cache[source] = texts(source, rec)
    return got


_PATTERNS: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    pat = _PATTERNS.get(pattern)
    if pat is None:
        pat = _PATTERNS[pattern] = re.compile(pattern)
    return pat


_PARTS = re.compile(r"(?<=[?.!;])\s+")


def relevance(span: str, question: str, context_terms: set[str]) -> tuple[float | None, list[str]]:
    """(share of key terms the span names, the key terms it misses) for its best-covered question part.

    None when no part of the question shares a word with the context: nothing to score against.
    """
    have = terms(span)
    best: tuple[float, list[str]] | None = None
    for part in _PARTS.split(question.strip()):
        key = terms(part) & context_terms
        if not key:
            continue
        score = len(key & have) / len(key)
        if best is None or score > best[0]:
            best = (score, sorted(key - have))
    return (None, []) if best is None else best


def _attributed(span: str, figs: set[str], lines: list[tuple[set[str], set[str]]]) -> bool:
    """Whether the line the span is about holds all its figures.

    The line it is about shares the most words (figures aside) with it; on a tie, any of those.
    """
    words = {t for t in terms(span) if not t.isdigit()}
    scores = [len(words & line_terms) for _, line_terms in lines]
    best = max(scores)
    return any(figs <= line_figs for (line_figs, _), score in zip(lines, scores, strict=True) if score == best)


class ContentCheck:
    """One content gate, fed record by record."""

    def __init__(self, spec: GateSpec) -> None:
        assert spec.check is not None and spec.spans is not None
        self.spec = spec
        self.name = str(spec.metric)
        self.spans = self.passed = self.unscored = 0
        self.items = self.items_failed = 0
        self.examples: list[dict[str, Any]] = []

    def _fail(self, rec: dict[str, Any], span: str, **why: Any) -> None:
        if len(self.examples) < EXAMPLES:
            self.examples.append({"sample_id": rec.get("sample_id"), "span": span[:300], **why})

    def add(self, rec: dict[str, Any], cache: dict[Any, Any]) -> list[str]:
        """Check ``rec``'s spans; returns them (the LLM judge reuses them)."""
        spec = self.spec
        assert spec.spans is not None
        spans = cached_texts(spec.spans, rec, cache)
        if not spans:
            return spans
        self.items += 1
        self.spans += len(spans)
        failed = 0
        if spec.check == "distinct_spans":
            seen: set[str] = set()
            for s in spans:
                key = _norm_span(s)
                if key in seen:
                    failed += 1
                    self._fail(rec, s, reason="repeats an earlier span of the item")
                seen.add(key)
        elif spec.check == "grounded":
            have = self._context(rec, cache, "figures", figures)
            lines = self._lines(rec, cache) if spec.within == "line" else []
            for s in spans:
                figs = figures(s)
                missing = sorted(figs - have)
                if missing:
                    failed += 1
                    self._fail(rec, s, reason="figures not in the context", missing=missing)
                elif lines and figs and not _attributed(s, figs, lines):
                    failed += 1
                    self._fail(rec, s, reason="figures not in the line the span is about", missing=[])
        else:  # relevant
            assert spec.question is not None
            question = " ".join(cached_texts(spec.question, rec, cache))
            ctx_terms = self._context(rec, cache, "terms", terms)
            for s in spans:
                score, missing = relevance(s, question, ctx_terms)
                if score is None:
                    self.unscored += 1
                elif score < spec.min_overlap:
                    failed += 1
                    self._fail(rec, s, reason="does not name the question's key terms", score=round(score, 3),
                               missing=missing, question=question[:300])  # fmt: skip
        self.passed += len(spans) - failed
        self.items_failed += failed > 0
        return spans

    def _context(self, rec: dict[str, Any], cache: dict[Any, Any], kind: str, fn: Any) -> set[str]:
        key = (kind, tuple(self.spec.context))
        got = cache.get(key)
        if got is None:
            got = set()
            for src in self.spec.context:
                for t in cached_texts(src, rec, cache):
                    got |= fn(t)
            cache[key] = got
        return got

    def _lines(self, rec: dict[str, Any], cache: dict[Any, Any]) -> list[tuple[set[str], set[str]]]:
        key = ("lines", tuple(self.spec.context))
        got = cache.get(key)
        if got is None:
            got = [(figures(line), terms(line)) for src in self.spec.context for t in cached_texts(src, rec, cache)
                   for line in t.splitlines() if line.strip()]  # fmt: skip
            cache[key] = got
        return got

    def share(self) -> float | None:
        return round(self.passed / self.spans, 6) if self.spans else None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "check": self.spec.check,
            "share": self.share(),
            "spans": self.spans,
            "failed_spans": self.spans - self.passed,
            "items": self.items,
            "items_failed": self.items_failed,
            "examples": self.examples,
        }
        if self.spec.check == "relevant":
            out["min_overlap"] = self.spec.min_overlap
            out["unscored_spans"] = self.unscored
        return out
