"""The LLM attempt log (``logs/attempts.jsonl``) and the summary computed from it.

One line per attempt, fields as in DESIGN.md: ts, run_id, slot, column, attempt (1-based),
backend, model, status (ok | retry | repaired | failed | cached), http_status, error, latency_ms,
prompt_tokens, completion_tokens, pack, repairs, cost_usd — plus ``unpacked_ratio`` on packed
requests (the items' prompts one by one over the packed prompt, in characters) and
``trimmed_tokens`` where a prompt was trimmed. No prompt text, no key.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from datamill.store.rundir import utc_now

# USD per 1K tokens (prompt, completion); a recipe's model block may override. Local models cost 0.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.00015, 0.0006),
    "gpt-4o": (0.0025, 0.01),
    "gpt-4.1-mini": (0.0004, 0.0016),
    "gpt-4.1": (0.002, 0.008),
}


def cost_usd(
    model: str, prompt_tokens: int, completion_tokens: int, override: tuple[float | None, float | None]
) -> float:
    base = PRICES.get(model, (0.0, 0.0))
    p = override[0] if override[0] is not None else base[0]
    c = override[1] if override[1] is not None else base[1]
    return (prompt_tokens * p + completion_tokens * c) / 1000.0


class AttemptLog:
    """Appends attempt lines; each line is one write, so processes never interleave."""

    def __init__(self, path: str | Path, run_id: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, **fields: Any) -> None:
        os.write(
            self._fd, orjson.dumps({"ts": utc_now(), "run_id": self.run_id, **fields}, option=orjson.OPT_APPEND_NEWLINE)
        )

    def close(self) -> None:
        os.close(self._fd)


def read_attempts(path: str | Path) -> Iterator[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        return
    with open(p, "rb") as f:
        for line in f:
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError:
                continue


def _pct(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def _ts(value: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def window_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    statuses = Counter(r["status"] for r in rows)
    live = [r for r in rows if r["status"] != "cached"]
    lat = sorted(float(r["latency_ms"]) for r in live if r.get("latency_ms") is not None)
    answered = [r for r in live if r["status"] in ("ok", "repaired")]
    return {
        "attempts": len(rows),
        "success_rate": (len(answered) / len(live)) if live else None,
        "repair_rate": (statuses["repaired"] / len(answered)) if answered else None,
        "latency_p50_ms": _pct(lat, 0.5),
    }


def summarize(rows: Iterable[dict[str, Any]], windows: int = 5) -> dict[str, Any]:
    """The run summary: rates, latency percentiles, counts, repairs, failures, tokens, cost, drift."""
    rows = list(rows)
    # A step down the structured-output ladder is an event, not an attempt.
    step_downs = [{"column": r.get("column"), "model": r.get("model"), **r["step_down"]} for r in rows
                  if r["status"] == "step_down"]  # fmt: skip
    rows = [r for r in rows if r["status"] != "step_down"]
    statuses = Counter(r["status"] for r in rows)
    live = [r for r in rows if r["status"] != "cached"]
    lat = sorted(float(r["latency_ms"]) for r in live if r.get("latency_ms") is not None)
    repairs: Counter[str] = Counter()
    for r in rows:
        repairs.update(r.get("repairs") or [])
    failures = Counter(r.get("error") or "unknown" for r in rows if r["status"] in ("failed", "retry"))
    stamps = [_ts(r["ts"]) for r in rows if "ts" in r]
    seconds = (max(stamps) - min(stamps)) if len(stamps) > 1 else 0.0
    done = statuses["ok"] + statuses["repaired"] + statuses["cached"]
    prompt = sum(int(r.get("prompt_tokens") or 0) for r in live)
    # A packed attempt logs how much longer its items' prompts would have been one by one.
    unpacked = round(sum(int(r.get("prompt_tokens") or 0) * float(r.get("unpacked_ratio") or 1.0) for r in live))
    out: dict[str, Any] = {
        "attempts": len(rows),
        "items_per_s": (
            sum(int(r.get("pack") or 1) for r in rows if r["status"] in ("ok", "repaired", "cached")) / seconds
        )
        if seconds > 0
        else None,
        "latency_ms": {"p50": _pct(lat, 0.5), "p95": _pct(lat, 0.95), "p99": _pct(lat, 0.99)},
        "counts": {
            "success": done,
            "failed": statuses["failed"],
            "retry": statuses["retry"],
            "cached": statuses["cached"],
        },
        "statuses": dict(sorted(statuses.items())),
        "repairs": dict(sorted(repairs.items())),
        "failure_reasons": dict(sorted(failures.items())),
        "prompt_tokens": prompt,
        "prompt_tokens_unpacked": unpacked,
        "completion_tokens": sum(int(r.get("completion_tokens") or 0) for r in live),
        "cache_hits": statuses["cached"],
        "cost_usd": round(sum(float(r.get("cost_usd") or 0.0) for r in rows), 6),
        "trimmed_prompts": sum(1 for r in rows if r.get("trimmed_tokens")),
        "format_step_downs": step_downs,
    }
    out["by_model"] = _breakdown(rows, lambda r: f"{r.get('backend')}:{r.get('model')}")
    out["by_column"] = _breakdown(rows, lambda r: str(r.get("column")))
    out["drift"] = drift(rows, windows)
    return out


def _breakdown(rows: list[dict[str, Any]], key: Any) -> dict[str, dict[str, Any]]:
    """Attempts, answers, tokens and cost per model (or column): a planner and its workers apart."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        k = key(r)
        b = out.setdefault(k, {"attempts": 0, "answered": 0, "cached": 0, "failed": 0, "prompt_tokens": 0,
                               "completion_tokens": 0, "cost_usd": 0.0})  # fmt: skip
        b["attempts"] += 1
        status = r["status"]
        b["answered"] += status in ("ok", "repaired")
        b["cached"] += status == "cached"
        b["failed"] += status == "failed"
        if status != "cached":
            b["prompt_tokens"] += int(r.get("prompt_tokens") or 0)
            b["completion_tokens"] += int(r.get("completion_tokens") or 0)
        b["cost_usd"] = round(b["cost_usd"] + float(r.get("cost_usd") or 0.0), 6)
    return dict(sorted(out.items()))


def drift(rows: list[dict[str, Any]], windows: int = 5) -> dict[str, Any]:
    """Compare the first and last windows (seed 003): repair-rate growth > 50%, latency p50 up
    > 50%, success rate down > 5 points are flagged."""
    rows = [r for r in rows if r["status"] != "cached"]
    if len(rows) < 2 * windows:
        return {"windows": 0, "flags": []}
    size = len(rows) // windows
    first, last = window_stats(rows[:size]), window_stats(rows[-size:])
    return {"windows": windows, "first": first, "last": last, "flags": drift_flags(first, last)}


def compare_tiers(base: list[dict[str, Any]], tier: list[dict[str, Any]]) -> dict[str, Any]:
    """Seed 003's tier check: a run (``tier``, e.g. 100K) against a smaller one (``base``, 1K),
    whole against whole, by the same rules as :func:`drift`."""
    a = window_stats([r for r in base if r["status"] not in ("cached", "step_down")])
    b = window_stats([r for r in tier if r["status"] not in ("cached", "step_down")])
    return {"base": a, "tier": b, "flags": drift_flags(a, b)}


def drift_flags(first: dict[str, Any], last: dict[str, Any]) -> list[str]:
    """Which of seed 003's drift rules ``last`` breaks against ``first``."""
    flags = []
    fr, lr = first["repair_rate"], last["repair_rate"]
    if fr is not None and lr is not None and lr > max(fr * 1.5, fr + 0.02):
        flags.append("repair_rate_growth")
    fl, ll = first["latency_p50_ms"], last["latency_p50_ms"]
    if fl and ll and ll > fl * 1.5:
        flags.append("latency_degradation")
    fs, ls = first["success_rate"], last["success_rate"]
    if fs is not None and ls is not None and ls < fs - 0.05:
        flags.append("success_rate_drop")
    return flags
