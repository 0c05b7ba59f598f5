"""``datamill bench lambda``: records/s and peak RSS of the lambda-traces recipe.

Two measurements in one run, on the same slots and the same number of processes:

- ``datamill``: the full engine (plan, columns, part commit with fsync) into a fresh run dir;
- ``bare``: the generator function called in a plain loop, records serialised with orjson and
  written to one file per process, no engine at all. It is the floor the engine stands on.

The ratio datamill/bare is the engine's overhead; absolute numbers on a shared machine are noise.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from datamill.columns import GeneratorContext
from datamill.engine import LocalExecutor, Plan, execute
from datamill.forked import in_fork
from datamill.recipe import LoadedRecipe, load_file
from datamill.recipes import builtin_path
from datamill.seeds import slot_seed


@dataclass
class BenchResult:
    label: str
    slots: int
    records: int
    seconds: float
    peak_rss_mb: float

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


def _peak_rss_mb() -> float:
    """Largest RSS of this process and of any child it has reaped, in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


def _bare_worker(args: tuple[LoadedRecipe, int, int, str]) -> int:
    from datamill.recipes.lambda_traces import generate

    loaded, lo, hi, path = args
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
    recipe = loaded.recipe
    plan = Plan(recipe)
    n = 0
    with open(path, "wb") as f:
        buf: list[bytes] = []
        for slot in range(lo, hi):
            seed = slot_seed(recipe.seed, slot)
            cyc = plan.cycle(slot)
            ctx = GeneratorContext(
                slot=slot,
                attempt=0,
                seed=seed,
                slot_id=f"{recipe.name}:{recipe.seed}:{slot}",
                rng_label="trace",
                params=dict(recipe.params),
                cycle=None if cyc is None else cyc[0],
                cycle_params={} if cyc is None else cyc[1],
                inputs={},
            )
            for k, rec in enumerate(generate(ctx)):
                buf.append(orjson.dumps({"sample_id": f"{ctx.slot_id}:{k}", **rec}, option=orjson.OPT_APPEND_NEWLINE))
                n += 1
            if len(buf) > 4096:
                f.write(b"".join(buf))
                buf.clear()
        f.write(b"".join(buf))
    return n


def bench_bare(loaded: LoadedRecipe, workers: int, tmp: Path) -> BenchResult:
    size = loaded.recipe.size
    chunks = [
        (loaded, size * w // workers, size * (w + 1) // workers, str(tmp / f"bare-{w}.jsonl")) for w in range(workers)
    ]
    t0 = time.perf_counter()
    if workers == 1:
        records = _bare_worker(chunks[0])
    else:
        with mp.get_context("fork").Pool(workers) as pool:
            records = sum(pool.map(_bare_worker, chunks))
    return BenchResult("bare", size, records, time.perf_counter() - t0, _peak_rss_mb())


def bench_datamill(loaded: LoadedRecipe, text: str, workers: int, out: Path) -> BenchResult:
    t0 = time.perf_counter()
    summary = execute(loaded, text, out, executor=LocalExecutor(workers))
    seconds = time.perf_counter() - t0
    return BenchResult("datamill", loaded.recipe.size, summary.records, seconds, _peak_rss_mb())


def run_lambda_bench(size: int, workers: int, seed: int = 0, keep: str | None = None) -> dict[str, Any]:
    """Run both measurements; returns a dict with both results and their ratio."""
    path = builtin_path("lambda-traces")
    assert path is not None
    text = path.read_text()
    loaded = load_file(path).with_overrides(size=size, seed=seed)
    tmp = Path(tempfile.mkdtemp(prefix="datamill-bench-"))
    try:
        bare = in_fork(bench_bare, loaded, workers, tmp)
        for f in tmp.glob("bare-*.jsonl"):
            f.unlink()
        out = Path(keep) if keep else tmp / "run"
        ours = in_fork(bench_datamill, loaded, text, workers, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "recipe": "lambda-traces",
        "slots": size,
        "workers": workers,
        "cpus": os.cpu_count(),
        "datamill": _as_dict(ours),
        "bare": _as_dict(bare),
        "ratio": round(ours.records_per_s / bare.records_per_s, 3) if bare.records_per_s else None,
        "same_records": ours.records == bare.records,
    }


def _as_dict(r: BenchResult) -> dict[str, Any]:
    return {
        "records": r.records,
        "seconds": round(r.seconds, 3),
        "records_per_s": round(r.records_per_s, 1),
        "peak_rss_mb": round(r.peak_rss_mb, 1),
    }
