"""The LLM judge of a ``relevant`` content gate (``judge: {model, prompt, max_spans}``).

Verify streams records once; the judge sees a deterministic sample of at most ``max_spans``
(question, span) pairs (reservoir sampling from a fixed seed, so the same data gives the same
sample) and asks the model, one request per span, whether the span answers the question. A
reply that starts with "yes" passes, "no" fails; any other reply fails and is counted as
``unclear``. Replies are not cached: verify writes nothing but its report.
"""

from __future__ import annotations

import asyncio
import random
import re
from typing import Any

from datamill.quality.content import EXAMPLES, ContentCheck, cached_texts
from datamill.recipe.model import GateSpec

DEFAULT_PROMPT = (
    "Question: {question}\n"
    "Statement: {span}\n"
    "Does the statement answer the question, or one part of it, about the very subject the question names "
    "(the same place, date, item and quantity)? Reply with one word: yes or no."
)
_VERDICT = re.compile(r"^\W*(yes|no)\b", re.I)


class JudgeCheck(ContentCheck):
    """A ``relevant`` gate whose verdicts come from a model instead of word overlap."""

    def __init__(self, spec: GateSpec) -> None:
        super().__init__(spec)
        assert spec.judge is not None
        self.judge = spec.judge
        self.sample: list[tuple[Any, str, str]] = []
        self.seen = 0
        self.unclear = 0
        self._rng = random.Random(0)

    def add(self, rec: dict[str, Any], cache: dict[Any, Any]) -> list[str]:
        spec = self.spec
        assert spec.spans is not None and spec.question is not None
        spans = cached_texts(spec.spans, rec, cache)
        if not spans:
            return spans
        question = " ".join(cached_texts(spec.question, rec, cache))
        self.items += 1
        for span in spans:
            self.seen += 1
            pair = (rec.get("sample_id"), question, span)
            if len(self.sample) < self.judge.max_spans:
                self.sample.append(pair)
            else:
                j = self._rng.randrange(self.seen)
                if j < self.judge.max_spans:
                    self.sample[j] = pair
        return spans

    def run(self) -> None:
        """Ask the model about every sampled span; fills the counts and examples."""
        verdicts = asyncio.run(self._ask_all()) if self.sample else []
        failed_items: set[Any] = set()
        self.spans = len(self.sample)
        for (sid, question, span), verdict in zip(self.sample, verdicts, strict=True):
            if verdict == "yes":
                self.passed += 1
                continue
            failed_items.add(sid)
            if verdict not in ("yes", "no"):
                self.unclear += 1
            if len(self.examples) < EXAMPLES:
                reason = (
                    "the judge said no" if verdict == "no" else f"the judge's reply is not yes or no: {verdict[:80]!r}"
                )
                self.examples.append(
                    {"sample_id": sid, "span": span[:300], "reason": reason, "question": question[:300]}
                )
        self.items_failed = len(failed_items)

    async def _ask_all(self) -> list[str]:
        from datamill.columns.llm import make_backend
        from datamill.llm.client import LLMClient, LLMFailed

        spec = self.judge.model
        backend, secret = make_backend(spec)
        client = LLMClient(backend, spec, cache=None, log=None, secret=secret)
        template = self.judge.prompt or DEFAULT_PROMPT

        def accept(resp: Any) -> tuple[str, str | None, list[str]]:
            return "ok", None, []

        async def one(i: int, question: str, span: str) -> str:
            payload: dict[str, Any] = {
                "model": spec.model or "default",
                "messages": [{"role": "user", "content": template.format(question=question, span=span)}],
                "temperature": 0.0,
                "max_tokens": 8,
                **({"seed": i} if spec.send_seed else {}),
            }
            try:
                out = await client.request(payload, slot=i, column=self.name, judge=accept)
            except LLMFailed as exc:
                return f"request failed: {exc.kind}"
            m = _VERDICT.match(out.response.text)
            return m.group(1).lower() if m else out.response.text.strip()

        try:
            return list(await asyncio.gather(*(one(i, q, s) for i, (_, q, s) in enumerate(self.sample))))
        finally:
            await backend.aclose()

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out.pop("min_overlap", None)
        out.pop("unscored_spans", None)
        out.update(judged_spans=self.spans, spans_seen=self.seen, unclear=self.unclear, max_spans=self.judge.max_spans)
        return out
