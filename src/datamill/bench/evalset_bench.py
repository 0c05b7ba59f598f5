"""``datamill bench evalset``: the built-in evalset recipe end to end against a loopback model.

The model is :class:`datamill.bench.eval_server.EvalServer` (planner, worker and judge in one, a
fixed latency per request, cases drawn from a space of sentence shapes so dedup has rounds to
run). For each worker count the run is timed from the command to the last dedup round (process
start included), and its requests are counted per column. The floor beside it is what the model
alone imposes at that latency: the longer of the dependency chain (the planner, a case request then
its judge, and that pair again per dedup round) and all requests sent at full concurrency.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from datamill.bench.eval_server import EvalServer


def run_bench(size: int = 500, latency_ms: float = 200.0, workers: tuple[int, ...] = (1, 2),
              concurrency: int = 64) -> list[dict[str, Any]]:  # fmt: skip
    import datamill

    src = (Path(datamill.__file__).parent / "recipes" / "evalset" / "recipe.yaml").read_text()
    srv = EvalServer(latency_s=latency_ms / 1000)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="dm-bench-evalset-"))
    try:
        block = f"model: {{backend: openai, base_url: '{srv.base_url}', model: bench, concurrency: {concurrency}}}\n"
        recipe = tmp / "evalset.yaml"
        recipe.write_text(src.replace("model: {backend: embedded, n_ctx: 4096}", block.rstrip(), 1))
        for w in workers:
            out = tmp / f"out{w}"
            t = time.perf_counter()
            res = subprocess.run([sys.executable, "-m", "datamill", "run", str(recipe), "--size", str(size),
                                  "--out", str(out), "--workers", str(w), "--progress", "none"],
                                 capture_output=True, text=True)  # fmt: skip
            seconds = time.perf_counter() - t
            if res.returncode != 0:
                raise RuntimeError(f"evalset run failed: {res.stderr.strip()[-500:]}")
            tel = orjson.loads((out / "reports" / "telemetry.json").read_bytes())
            dedup = orjson.loads((out / "reports" / "dedup.json").read_bytes())
            rounds = [r["count"] for r in dedup["rounds"] if r["round"] != "left"]
            total = sum(v["attempts"] for v in tel["by_column"].values())
            chain = (1 + 2 + 2 * len(rounds)) * latency_ms / 1000  # planner, case -> judge, each round's pair
            throughput = math.ceil(total / concurrency) * latency_ms / 1000  # every request at full concurrency
            rows.append({
                "workers": w, "size": size, "seconds": round(seconds, 2),
                "requests": {k: v["attempts"] for k, v in tel["by_column"].items()},
                "dedup_rounds": rounds, "fresh_context_violations": len(srv.leaks),
                "floor_s": round(max(chain, throughput), 2),
            })  # fmt: skip
    finally:
        srv.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return rows
