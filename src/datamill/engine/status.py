"""``datamill status``: what a run dir holds and how fast it is filling."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from datamill.engine.commit import PartResult
from datamill.engine.run import RunSummary, summarize
from datamill.store.integrity import checked_meta, quick_check
from datamill.store.reader import expected_gaps
from datamill.store.rundir import RunDir


@dataclass
class Status:
    summary: RunSummary
    parts: int
    running_shards: list[str] = field(default_factory=list)
    slots_per_s: float | None = None
    records_per_s: float | None = None
    eta_s: float | None = None
    last_stop: str | None = None
    executor: str | None = None  # what ran the latest invocation: "local" or "ray"
    missing: list[tuple[int, int]] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)
    budget: list[dict[str, Any]] = field(default_factory=list)
    failure_reasons: dict[str, int] = field(default_factory=dict)  # "column: kind" -> failed slots
    llm: dict[str, Any] = field(default_factory=dict)  # requests, tokens and cost so far (attempt log)
    estimate: dict[str, Any] | None = None  # reports/estimate.json, written by `datamill estimate --out`

    def as_dict(self) -> dict[str, Any]:
        s = self.summary.as_dict()
        for k in ("shard", "parts_resumed", "parts_run", "seconds", "stopped"):
            s.pop(k, None)
        s.update(
            parts=self.parts,
            running_shards=self.running_shards,
            slots_per_s=self.slots_per_s,
            records_per_s=self.records_per_s,
            eta_s=self.eta_s,
            last_stop=self.last_stop,
            executor=self.executor,
            missing=[list(g) for g in self.missing],
            damaged=self.damaged,
            budget=self.budget,
            failure_reasons=self.failure_reasons,
            llm=self.llm,
            estimate=self.estimate,
        )
        return s


def _ts(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _budget(rd: RunDir, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Spent (settled, plus reservations a kill left open), reserved now and remaining, per model."""
    from datamill.columns.llm import model_specs, recipe_model_slots
    from datamill.llm.runlimits import RunLimits, budget_report
    from datamill.recipe.model import Recipe

    recipe = Recipe.model_validate(manifest["recipe"])
    slots = recipe_model_slots(recipe)
    if not slots:
        return []
    limits = RunLimits(len(slots), shared=False)
    limits.load_ledger(rd.logs_dir / "spend.jsonl", slots)
    return budget_report(model_specs(recipe), slots, limits)


def llm_so_far(rd: RunDir) -> dict[str, Any]:
    """Requests sent, tokens and cost so far, from the attempt log (streamed; {} without LLM attempts)."""
    from datamill.llm.telemetry import read_attempts

    out = {"requests": 0, "cached": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
    seen = False
    for a in read_attempts(rd.logs_dir / "attempts.jsonl"):
        status = a.get("status")
        if status == "step_down":
            continue
        seen = True
        if status == "cached":
            out["cached"] += 1
            continue
        out["requests"] += 1
        out["prompt_tokens"] += int(a.get("prompt_tokens") or 0)
        out["completion_tokens"] += int(a.get("completion_tokens") or 0)
        out["cost_usd"] += float(a.get("cost_usd") or 0.0)
    out["cost_usd"] = round(out["cost_usd"], 6)
    return out if seen else {}


def run_status(path: str | Path) -> Status:
    """Done and remaining slots of the whole plan, records, and the recent rate and ETA."""
    rd = RunDir(path)
    manifest = rd.manifest()
    slots = int(manifest["plan"]["slots"])
    # Meta and size of every part (a stat each): damaged parts are listed, not counted.
    healthy, damaged = [], []
    for part in rd.parts():
        reason = quick_check(part)
        if reason is None:
            healthy.append(part)
        else:
            damaged.append(reason)
    results = [PartResult.from_meta(checked_meta(p)) for p in healthy]
    summary = RunSummary(manifest["recipe_name"], manifest["recipe_hash"], 1, 0, slots_total=slots)
    summarize(summary, results)
    status = Status(summary, parts=len(results), running_shards=rd.running_shards(), damaged=damaged)
    status.missing = expected_gaps(rd, healthy)
    status.budget = _budget(rd, manifest)
    reasons: Counter[str] = Counter()
    for r in results:
        reasons.update(": ".join(f["reason"].split(": ")[:2]) for f in r.failed)
    status.failure_reasons = dict(reasons.most_common())
    status.llm = llm_so_far(rd)
    est = rd.reports_dir / "estimate.json"
    if est.is_file():
        status.estimate = orjson.loads(est.read_bytes())
    # Rate over the parts committed since the most recent start of each shard.
    window: dict[str, list[float]] = {}  # shard -> [start, last commit, slots, records]
    for ev in rd.events():
        key, kind = str(ev.get("shard")), ev.get("event")
        if kind == "start":
            status.executor = ev.get("executor", "local")
            t = _ts(ev["ts"])
            window[key] = [t, t, 0, 0]
        elif kind == "part" and key in window:
            w = window[key]
            w[1] = _ts(ev["ts"])
            w[2] += ev["slots_done"] + ev["slots_failed"]
            w[3] += ev["records"]
        elif kind == "stop":
            status.last_stop = ev.get("reason")
    seconds = max((w[1] - w[0] for w in window.values()), default=0.0)
    if seconds > 0:
        status.slots_per_s = sum(w[2] for w in window.values()) / seconds
        status.records_per_s = sum(w[3] for w in window.values()) / seconds
        if status.slots_per_s > 0:
            status.eta_s = summary.slots_remaining / status.slots_per_s
    return status
