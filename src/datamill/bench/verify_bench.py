"""``datamill bench verify``: verify with token lengths against bare tokenization, same items.

Items are ~``tokens`` tokens of varied text each, written as a JSONL file. ``bare`` batch-encodes
their text fields with the same tokenizer (``encode_batch_fast`` where available, all cores);
``datamill`` runs the whole verify (parse, stats, metrics, tokens, gates, report).
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from datamill.forked import in_fork

WORDS = [
    "model",
    "data",
    "tool",
    "context",
    "answer",
    "question",
    "river",
    "number",
    "green",
    "quickly",
    "system",
    "table",
    "merge",
    "slot",
    "shard",
    "token",
    "prompt",
    "reason",
    "plan",
    "value",
    "field",
    "result",
    "check",
    "error",
    "cache",
    "parse",
    "record",
    "stream",
]


def make_items(path: Path, n: int, tokens: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "wb") as f:
        for i in range(n):
            # ~1.3 WordPiece tokens per word for this vocabulary mix, give or take punctuation.
            k = max(1, int(tokens / 1.3 * rng.uniform(0.8, 1.2)))
            text = " ".join(rng.choice(WORDS) + ("." if rng.random() < 0.08 else "") for _ in range(k))
            f.write(orjson.dumps({"sample_id": f"b:0:{i}:0", "kind": rng.choice("abc"), "text": f"item{i} {text}"}))
            f.write(b"\n")


def _bare(path: str) -> dict[str, Any]:
    from datamill.tokenize import TokenCounter

    counter = TokenCounter()
    t0 = time.perf_counter()
    # Every string field but the id, as verify counts them.
    with open(path, "rb") as f:
        items = [orjson.loads(line) for line in f]
    texts = [v for rec in items for k, v in rec.items() if isinstance(v, str) and k != "sample_id"]
    total = 0
    for i in range(0, len(texts), 2048):
        total += sum(counter.count(texts[i : i + 2048]))
    return {"seconds": time.perf_counter() - t0, "tokens": total, "items": len(items)}


def _ours(path: str, gates: str | None = None) -> dict[str, Any]:
    from datamill.quality import load_gates, verify

    specs = load_gates(gates) if gates else None
    t0 = time.perf_counter()
    report = verify(path, gates=specs)
    seconds = time.perf_counter() - t0
    n = report["header"]["num_items"]
    return {"seconds": seconds, "items": n}


def run_verify_bench(
    n: int, tokens: int, repeat: int = 3, file: str | None = None, gates: str | None = None
) -> dict[str, Any]:
    """Best-of-``repeat`` times; ``gates`` (a YAML file) adds dashboard, safety or other gates to verify."""
    import datamill.quality  # noqa: F401  (imported before forking, like the bare side's imports)

    with tempfile.TemporaryDirectory(prefix="datamill-bench-verify-") as tmp:
        path = Path(file) if file else Path(tmp) / "items.jsonl"
        if not file:
            make_items(path, n, tokens)
        bare, ours = [], []
        for _ in range(repeat):
            bare.append(in_fork(_bare, str(path)))
            ours.append(in_fork(_ours, str(path), gates))
    b = min(bare, key=lambda r: r["seconds"])
    o = min(ours, key=lambda r: r["seconds"])
    n = b["items"]
    return {
        "n": n,
        "tokens_target": tokens,
        "mean_tokens": round(b["tokens"] / n, 1),
        "bare_s": round(b["seconds"], 3),
        "verify_s": round(o["seconds"], 3),
        "ratio": round(o["seconds"] / b["seconds"], 3),
        "verify_s_per_100": round(o["seconds"] / n * 100, 4),
        "bare_s_per_100": round(b["seconds"] / n * 100, 4),
    }
