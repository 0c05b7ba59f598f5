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


def make_text_file(path: Path, n: int, seed: int = 0) -> None:
    """``n`` text-heavy records (two narrative fields of ~150-500 characters, a title, a category)
    as zstd JSONL: texts are drawn from a pool and prefixed with the item number, so every one is
    distinct and lengths vary, while writing 10M of them stays fast."""
    import zstandard

    rng = random.Random(seed)
    pool = [" ".join(rng.choice(WORDS) for _ in range(rng.randrange(20, 80))) for _ in range(4096)]
    kinds = ["a", "b", "c", "d"]
    with open(path, "wb") as raw, zstandard.ZstdCompressor(level=1).stream_writer(raw) as out:
        buf = []
        for i in range(n):
            r = rng.getrandbits(36)
            buf.append(
                orjson.dumps(
                    {
                        "sample_id": f"text:{i}:0",
                        "kind": kinds[r & 3],
                        "title": f"item {i} {pool[(r >> 2) & 4095][: 12 + (r >> 14) % 40]}",
                        "persona": f"{i}. {pool[(r >> 8) & 4095]} {pool[(r >> 20) & 4095]}",
                        "notes": f"{i}: {pool[(r >> 24) & 4095]}",
                    }
                )
            )
            if len(buf) == 4096:
                out.write(b"\n".join(buf) + b"\n")
                buf.clear()
        if buf:
            out.write(b"\n".join(buf) + b"\n")


def make_lambda_run(out: Path, records: int, workers: int = 2) -> int:
    """A lambda-traces run dir of at least ``records`` records (about 8.2 a slot); its record count."""
    import subprocess
    import sys

    slots = max(1, -(-records * 10 // 82))
    cmd = [sys.executable, "-m", "datamill", "run", "lambda-traces", "--size", str(slots), "--out", str(out)]
    subprocess.run([*cmd, "--workers", str(workers)], check=True, capture_output=True)
    from datamill.store import RunDir

    return sum(int(p.meta()["records"]) for p in RunDir(out).parts())


_HWM = (
    "import atexit, sys\n"
    "def hwm():\n"
    "    kb = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
    "    print(f'DATAMILL_VMHWM_KB {kb}', file=sys.stderr, flush=True)\n"
    "atexit.register(hwm)\n"
    "from datamill.cli.main import entry\n"
    "sys.argv[0] = 'datamill'\n"
    "entry()\n"
)


def peak_rss(args: list[str]) -> tuple[float, float, str]:
    """(peak RSS in MB, seconds, output) of ``datamill ARGS`` in a fresh process.

    The peak is the process's own VmHWM, printed as it exits: the ``ru_maxrss`` a parent reads
    after ``wait`` starts from the parent's own size at the fork (Linux keeps the larger of the
    two across ``exec``), so a large parent (pytest) would hide the measured process's peak.
    """
    import subprocess
    import sys

    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", _HWM, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    out = res.stdout + res.stderr
    marks = [line for line in res.stderr.splitlines() if line.startswith("DATAMILL_VMHWM_KB ")]
    if not marks:
        raise RuntimeError(f"datamill {' '.join(args)}: no peak RSS reported (exit {res.returncode}):\n{out[-2000:]}")
    return int(marks[-1].split()[1]) / 1024, seconds, out


def run_verify_memory_bench(
    sizes: list[int], shape: str = "lambda", tokens: bool = False, workdir: str | None = None, keep: bool = False
) -> list[dict[str, Any]]:
    """Peak RSS and time of ``datamill verify`` on datasets of each size (issue 23: flat in N).

    ``shape``: ``lambda`` (a lambda-traces run dir) or ``text`` (text-heavy zstd JSONL).
    """
    import shutil

    base = Path(tempfile.mkdtemp(prefix="datamill-bench-vmem-", dir=workdir))
    rows = []
    try:
        for n in sizes:
            target = base / (f"lt-{n}" if shape == "lambda" else f"text-{n}.jsonl.zst")
            t0 = time.perf_counter()
            if shape == "lambda":
                records = make_lambda_run(target, n)
            else:
                make_text_file(target, n)
                records = n
            made = time.perf_counter() - t0
            cmd = ["verify", str(target), "--report", str(base / f"v-{n}.json")]
            rss, seconds, out = peak_rss(cmd + ([] if tokens else ["--no-tokens"]))
            if not (base / f"v-{n}.json").is_file():
                raise RuntimeError(f"verify of {target} wrote no report:\n{out[-2000:]}")
            report = orjson.loads((base / f"v-{n}.json").read_bytes())
            rows.append(
                {
                    "shape": shape,
                    "records": records,
                    "tokens": tokens,
                    "peak_rss_mb": round(rss, 1),
                    "verify_s": round(seconds, 2),
                    "us_per_record": round(seconds / records * 1e6, 2),
                    "made_s": round(made, 1),
                    "num_items": report["header"]["num_items"],
                    "duplicates": report["summary"]["duplicate_sample_id_count"],
                }
            )
            if not keep:
                shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink()
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
    return rows
