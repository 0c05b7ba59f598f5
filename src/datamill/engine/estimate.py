"""``datamill estimate``: requests, tokens, cost and time of a run, before it spends anything.

Prompts are rendered for an evenly spread sample of slots exactly as the run renders them
(templates, schema instruction, trimming, packing), and counted:

- the embedded model: its own tokenizer and chat template, read from the GGUF — exact;
- a server: a byte-level BPE (SmolLM2's) as a stand-in for the server's tokenizer — approximate,
  and said so. ``sample_calls=K`` sends K of the sampled requests for real (through the run's
  cache, limits and budget, so the run reuses them) and scales the count by the ratio of the
  server's own prompt-token count to ours on those K, which makes it the server's number.

Completion tokens are bounded by ``max_tokens`` (the cost ceiling) and, with sample calls,
measured (the expected cost). Time is requests x latency / concurrency, no faster than ``rpm``
allows; latency is measured by the sample calls, else taken from earlier attempts in the run dir,
else assumed (and labelled so).
"""

from __future__ import annotations

import math
import statistics
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from datamill.columns import RunContext
from datamill.columns.llm import LLM
from datamill.engine.slots import SlotRunner
from datamill.llm.telemetry import cost_usd, read_attempts
from datamill.recipe import LoadedRecipe
from datamill.recipe.sandbox import JINJA

ASSUMED_LATENCY_S = 1.0


@dataclass
class ColumnEstimate:
    column: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens_max: int
    completion_tokens: int | None  # measured mean x requests (sample calls)
    cost_usd_max: float
    cost_usd: float | None
    latency_s: float
    latency_from: str  # "sample calls" | "earlier attempts" | "assumed"
    seconds: float
    tokenizer: str
    calibration: float | None = None  # server tokens / our tokens on the sample calls

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Estimate:
    recipe: str
    slots: int
    sample: int
    sample_calls: int
    columns: list[ColumnEstimate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(c.requests for c in self.columns)

    @property
    def prompt_tokens(self) -> int:
        return sum(c.prompt_tokens for c in self.columns)

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.columns)  # columns of one slot run one after another

    def as_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "slots": self.slots,
            "sample": self.sample,
            "sample_calls": self.sample_calls,
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens_max": sum(c.completion_tokens_max for c in self.columns),
            "completion_tokens": _sum_or_none([c.completion_tokens for c in self.columns]),
            "cost_usd_max": round(sum(c.cost_usd_max for c in self.columns), 6),
            "cost_usd": _sum_or_none([c.cost_usd for c in self.columns]),
            "seconds": round(self.seconds, 1),
            "columns": [c.as_dict() for c in self.columns],
            "notes": self.notes,
        }


def _sum_or_none(values: list[Any]) -> Any:
    return None if any(v is None for v in values) else (round(sum(values), 6) if values else 0)


class _Counter:
    """Prompt tokens of a request's messages, chat template included where it is known."""

    def __init__(self, backend: str) -> None:
        self.template: Any = None
        try:
            from datamill.tokenize import smollm2_tokenizer

            self._tok, template = smollm2_tokenizer()
            if backend == "embedded":
                self.name = "exact (the embedded model's tokenizer and chat template)"
                self.template = JINJA.from_string(template) if template else None
            else:
                self.name = "approximate (a byte-level BPE standing in for the server's tokenizer)"
        except Exception:  # no tokenizers/gguf installed: a rough rule
            self._tok = None
            self.name = "approximate (4 characters per token)"

    def count(self, messages: list[dict[str, str]]) -> int:
        if self.template is not None:
            text = self.template.render(messages=messages, add_generation_prompt=True)
            extra = 0
        else:
            text = "\n".join(m["content"] for m in messages)
            extra = 4 * len(messages) + 3  # role markers of a typical chat template
        if self._tok is None:
            return math.ceil(len(text) / 4) + extra
        return len(self._tok.encode(text, add_special_tokens=False).ids) + extra


def sample_slots(size: int, k: int) -> list[int]:
    """``k`` slots spread evenly over ``[0, size)`` (all of them when k >= size)."""
    k = min(k, size)
    return sorted({i * size // k for i in range(k)})


def estimate(
    loaded: LoadedRecipe,
    sample: int = 1000,
    sample_calls: int = 0,
    run_dir: Path | None = None,
) -> Estimate:
    """The estimate of ``loaded`` (see the module docstring); ``run_dir`` receives sample calls."""
    recipe = loaded.recipe
    slots = sample_slots(recipe.size, sample)
    result = Estimate(recipe.name, recipe.size, len(slots), sample_calls)
    run_id = "estimate-" + uuid.uuid4().hex[:8]
    ctx = RunContext(run_dir, run_id) if run_dir is not None else None
    runner = SlotRunner(loaded, ctx)
    try:
        llm_cols = [c for c in runner.columns if isinstance(c, LLM)]
        if not llm_cols:
            result.notes.append("no LLM columns: nothing to send")
            return result
        states = runner.states(slots)
        for col in runner.columns:  # CPU columns as the run computes them; LLM answers as placeholders
            if isinstance(col, LLM):
                for s in states:
                    for row in s.rows:
                        row.setdefault(col.name, _Blank())
            else:
                col.evaluate(states)
        live = [s for s in states if s.failed is None and s.dropped is None]
        failed = [s for s in states if s.failed is not None]
        if failed:  # nothing silent: a slot whose prompt cannot be built is no request, and said so
            result.notes.append(f"{len(failed):,} of {len(states):,} sampled slots failed before any request "
                                f"(first: slot {failed[0].slot}: {failed[0].failed})")  # fmt: skip
        if any(_reads_llm(loaded, c.name) for c in llm_cols):
            result.notes.append("prompts that use an earlier LLM column's answer are counted without it")
        measured: dict[str, dict[str, Any]] = {}
        if sample_calls and live:
            measured = _sample_calls(runner, [s.slot for s in live], sample_calls, run_dir, run_id)
        for col in llm_cols:
            result.columns.append(_column(col, live, len(states), recipe.size, measured.get(col.name), run_dir))
    finally:
        runner.close()
    return result


def _reads_llm(loaded: LoadedRecipe, name: str) -> bool:
    from datamill.recipe.check import dependencies
    from datamill.recipe.model import LLMColumn

    return any(isinstance(loaded.recipe.columns[d], LLMColumn) for d in dependencies(loaded.recipe, name))


def _sample_calls(runner: SlotRunner, slots: list[int], k: int, run_dir: Path | None, run_id: str) -> dict[str, Any]:
    """Run ``k`` of ``slots`` for real; per column: the calls' server prompt tokens, completions, latencies."""
    chosen = [slots[i * len(slots) // min(k, len(slots))] for i in range(min(k, len(slots)))]
    runner.run(sorted(set(chosen)))
    out: dict[str, dict[str, Any]] = {}
    assert run_dir is not None
    for a in read_attempts(run_dir / "logs" / "attempts.jsonl"):
        if a.get("run_id") != run_id or a.get("status") not in ("ok", "repaired", "cached"):
            continue
        m = out.setdefault(a["column"], {"slots": [], "prompt": 0, "completion": [], "latency": []})
        m["slots"].append(int(a["slot"]))
        m["prompt"] += int(a.get("prompt_tokens") or 0)
        m["completion"].append(int(a.get("completion_tokens") or 0))
        if a["status"] != "cached":
            m["latency"].append(float(a.get("latency_ms") or 0.0) / 1000.0)
    return out


def _earlier_latency(run_dir: Path | None) -> float | None:
    if run_dir is None:
        return None
    lat = [float(a["latency_ms"]) / 1000.0 for a in read_attempts(run_dir / "logs" / "attempts.jsonl")
           if a.get("status") in ("ok", "repaired") and a.get("latency_ms")]  # fmt: skip
    return statistics.median(lat) if lat else None


class _Blank(str):
    """An LLM answer not asked for yet: empty text whose every field (``case.input``) is empty too."""

    def __getattr__(self, name: str) -> _Blank:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Blank()

    def __getitem__(self, key: Any) -> _Blank:  # type: ignore[override]
        return _Blank()


def _column(
    col: LLM, live: list[Any], sampled: int, size: int, measured: dict[str, Any] | None, run_dir: Path | None
) -> ColumnEstimate:
    spec, model = col.spec, col.model
    counter = _Counter(model.backend)
    per_slot: dict[int, int] = {}
    for s in live:
        n = 0
        for row in s.rows:
            try:
                messages, _ = col.request_messages(s, row)
            except Exception:  # a prompt that needs a real answer of an earlier column: counted without it
                continue
            if spec.pack > 1:  # the shared system prompt once per pack, each item's prompt in full
                user = [m for m in messages if m["role"] == "user"]
                shared = counter.count([{"role": "system", "content": col.packed_system(s, row)}])
                n += shared // spec.pack + counter.count(user)
            else:
                n += counter.count(messages)
        per_slot[s.slot] = n
    rows_per_slot = sum(len(s.rows) for s in live) / max(1, len(live))
    share_live = len(live) / max(1, sampled)  # sampled slots that reach the column (not bad rows)
    mean = sum(per_slot.values()) / max(1, len(per_slot))
    items = round(size * rows_per_slot * share_live)
    requests = math.ceil(items / spec.pack)
    prompt_tokens = round(mean * size * share_live)
    calibration = None
    tokenizer = counter.name
    completion = None
    latency_from = "assumed"
    latency = ASSUMED_LATENCY_S
    if measured and measured["slots"]:
        ours = sum(per_slot.get(s, 0) for s in measured["slots"])
        if ours and spec.pack == 1:
            calibration = measured["prompt"] / ours
            prompt_tokens = round(prompt_tokens * calibration)
            tokenizer = f"the server's count on {len(measured['slots'])} sample calls"
        completion = round(statistics.mean(measured["completion"]) * items)
        if measured["latency"]:
            latency, latency_from = statistics.median(measured["latency"]), "sample calls"
    if latency_from == "assumed":
        earlier = _earlier_latency(run_dir)
        if earlier is not None:
            latency, latency_from = earlier, "earlier attempts"
    completion_max = items * spec.max_tokens
    price = (model.price_prompt_per_1k, model.price_completion_per_1k)
    name = model.model or model.backend
    parallel = 1 if model.backend == "embedded" else model.concurrency
    seconds = requests * latency / parallel
    if model.rpm:
        seconds = max(seconds, requests * 60.0 / model.rpm)
    return ColumnEstimate(
        column=col.name,
        model=name,
        requests=requests,
        prompt_tokens=prompt_tokens,
        completion_tokens_max=completion_max,
        completion_tokens=completion,
        cost_usd_max=round(cost_usd(name, prompt_tokens, completion_max, price), 6),
        cost_usd=None if completion is None else round(cost_usd(name, prompt_tokens, completion, price), 6),
        latency_s=round(latency, 4),
        latency_from=latency_from,
        seconds=round(seconds, 1),
        tokenizer=tokenizer,
        calibration=None if calibration is None else round(calibration, 4),
    )


def write_estimate(run_dir: Path, est: Estimate) -> None:
    from datamill.store import atomic

    (run_dir / "reports").mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(run_dir / "reports" / "estimate.json", orjson.dumps(est.as_dict(), option=orjson.OPT_INDENT_2))
