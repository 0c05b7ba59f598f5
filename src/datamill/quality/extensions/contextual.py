"""The contextual recipe's report fields and gate policies (seed 000).

Header: ``num_eligible, num_controls, num_negative_controls``. Summary: ``long_context_count``,
``long_context_quota {min_pct, max_pct, actual_pct, ok}``, ``token_length_stats {p10, p50, p90}``
(prompt tokens), ``integration_span_count_histogram``, ``integration_spans_over_cap_count``,
``integration_spans_over_cap_items``, ``top_regex_offenders``. Gates: the long-context quota
(N >= 1000) and more than 10% of eligible items over the span cap are warnings; duplicate
sample_ids and the perf budget are handled by verify itself (fail and warn).

Variety: ``distinct_question_templates`` (each eligible item's ``question_template``, when present)
and ``distinct_question_phrasings`` (the single phrasings those combine), ``distinct_tool_schemas``
(the JSON schema lines under ``Tools:`` in the prompts), with the
``tools_called`` histogram. Content: when no content gate is declared, verify applies the
built-in recipe's own (``grounded``, ``relevant``, ``distinct_spans``; see :meth:`content_gates`).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from functools import cache
from typing import Any

import orjson

from datamill.quality.stream import IntHistogram
from datamill.recipe.model import GateSpec
from datamill.recipes.contextual import INT_SPAN, MARKUP, TOOL_CALL

QUOTA = (0.02, 0.05)
CAP_WARN_SHARE = 0.10
# Checks run on every teacher text; their cost is reported (seed 000's "top regex offenders").
CHECKS: dict[str, re.Pattern[str]] = {
    "integration_span": INT_SPAN,
    "tool_call": TOOL_CALL,
    "markup": MARKUP,
    "unbalanced_int": re.compile(r"<int>(?:(?!</int>).)*$", re.S),
}
TOOLS_SECTION = re.compile(r"(?ms)^Tools:\n(.*?)(?:\n\n|\Z)")


@cache
def _builtin_gates() -> tuple[GateSpec, ...]:
    from datamill.recipe import load_file
    from datamill.recipes import builtin_path

    path = builtin_path("contextual")
    assert path is not None
    return tuple(g for g in load_file(path).recipe.gates if g.check is not None)


class ContextualReport:
    name = "contextual"

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.eligible = self.controls = self.negatives = self.long = 0
        self.span_hist: Counter[int] = Counter()
        self.over_cap: list[str] = []
        self.over_cap_count = 0
        self.prompt_tokens = IntHistogram()
        self.regex_time: dict[str, float] = {name: 0.0 for name in CHECKS}
        self.regex_hits: Counter[str] = Counter()
        self.templates: Counter[str] = Counter()
        self.schemas: set[bytes] = set()
        self.called: Counter[str] = Counter()

    def content_gates(self) -> list[GateSpec]:
        """The built-in recipe's content gates (its recipe.yaml), for items verified without a recipe."""
        return list(_builtin_gates())

    def add(self, rec: dict[str, Any]) -> None:
        text = rec.get("teacher_text") or ""
        counts = {}
        for name, pat in CHECKS.items():
            t0 = time.perf_counter()
            n = len(pat.findall(text))
            self.regex_time[name] += time.perf_counter() - t0
            self.regex_hits[name] += n
            counts[name] = n
        if rec.get("control"):
            self.controls += 1
        elif rec.get("negative_control"):
            self.negatives += 1
        else:
            self.eligible += 1
            if isinstance(rec.get("question_template"), str):
                self.templates[rec["question_template"]] += 1
            spans = counts["integration_span"]
            self.span_hist[spans] += 1
            if spans > self.cap:
                self.over_cap_count += 1
                if len(self.over_cap) < 100:
                    self.over_cap.append(str(rec.get("sample_id")))
        if rec.get("long_context"):
            self.long += 1
        if counts["tool_call"]:
            section = TOOLS_SECTION.search(rec.get("prompt") or "")
            for line in section.group(1).splitlines() if section else []:
                try:
                    self.schemas.add(orjson.dumps(orjson.loads(line), option=orjson.OPT_SORT_KEYS))
                except orjson.JSONDecodeError:
                    continue
            for body in TOOL_CALL.findall(text):
                try:
                    call = orjson.loads(body)
                except orjson.JSONDecodeError:
                    continue
                self.called[str(call.get("name")) if isinstance(call, dict) else "?"] += 1
        if isinstance(rec.get("prompt_tokens"), int):
            self.prompt_tokens.counts[rec["prompt_tokens"]] += 1

    def finish(
        self, tokens: dict[str, IntHistogram], num_items: int
    ) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        lengths = (self.prompt_tokens if self.prompt_tokens.counts else tokens.get("prompt")) or IntHistogram()
        pct_tokens = lengths.percentiles()

        pct = self.long / num_items if num_items else 0.0
        quota = {
            "min_pct": QUOTA[0],
            "max_pct": QUOTA[1],
            "actual_pct": round(pct, 4),
            "ok": QUOTA[0] <= pct <= QUOTA[1],
        }
        over_share = self.over_cap_count / self.eligible if self.eligible else 0.0
        offenders = sorted(self.regex_time.items(), key=lambda kv: -kv[1])[:5]
        header = {"num_eligible": self.eligible, "num_controls": self.controls, "num_negative_controls": self.negatives}
        summary = {
            "long_context_count": self.long,
            "long_context_quota": quota,
            "token_length_stats": {k: pct_tokens[k] for k in ("p10", "p50", "p90")},
            "integration_span_count_histogram": {str(k): v for k, v in sorted(self.span_hist.items())},
            "integration_span_cap": self.cap,
            "integration_spans_over_cap_count": self.over_cap_count,
            "integration_spans_over_cap_items": self.over_cap,
            "distinct_question_templates": len(self.templates),
            "distinct_question_phrasings": len({p for t in self.templates for p in t.split(":", 1)[-1].split("+")}),
            "distinct_tool_schemas": len(self.schemas),
            "tools_called": dict(sorted(self.called.items())),
            "top_regex_offenders": [
                {"pattern": name, "seconds": round(sec, 5), "matches": self.regex_hits[name]} for name, sec in offenders
            ],
        }
        gates = []
        if num_items >= 1000:
            gates.append({"metric": "long_context_quota", "min": QUOTA[0], "max": QUOTA[1], "severity": "warn",
                          "value": quota["actual_pct"], "passed": quota["ok"],
                          "reason": "" if quota["ok"] else f"{pct:.2%} outside 2-5%"})  # fmt: skip
        ok = over_share <= CAP_WARN_SHARE
        gates.append({"metric": "integration_spans_over_cap_share", "min": None, "max": CAP_WARN_SHARE,
                      "severity": "warn", "value": round(over_share, 4), "passed": ok,
                      "reason": "" if ok else f"{over_share:.1%} of eligible items over the cap"})  # fmt: skip
        return header, summary, gates
