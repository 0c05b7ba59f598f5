"""``datamill bench export``: a run dir to Parquet, against bare pyarrow on the same records.

One procedural run dir (four columns: a categorical, an integer, a float and a template string)
is made once. Then, alternating, each in a fresh forked process:

- ``datamill``: ``datamill export RUN --out x.parquet`` as the CLI does it (internal_full): the
  checked reader, schema inference over every record, row groups of 10,000, zstd, sha256;
- ``datamill_schema``: the same through a profile with a JSON schema, so every record is checked;
- ``bare``: read the part files, ``orjson.loads`` every line into one list, then
  ``pa.Table.from_pylist`` and ``pq.write_table(compression="zstd")``: all in memory, unchecked;
- ``bare_write``: only ``from_pylist`` + ``write_table`` of records already in memory.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from datamill.forked import in_fork

RECIPE = """
name: bench-export
seed: 1
size: {size}
columns:
  level: {{sampler: categorical, values: [easy, medium, hard]}}
  n: {{sampler: integer, low: 1, high: 9}}
  x: {{sampler: uniform, low: 0, high: 1}}
  text: {{template: "{{{{ level }}}} question number {{{{ slot }}}} with {{{{ n }}}} parts."}}
output: {{part_size: 10000}}
"""

SCHEMA = {
    "type": "object",
    "required": ["sample_id", "level", "n", "x", "text"],
    "properties": {
        "sample_id": {"type": "string"},
        "level": {"enum": ["easy", "medium", "hard"]},
        "n": {"type": "integer"},
        "x": {"type": "number"},
        "text": {"type": "string"},
    },
}


def _rss_now_mb() -> float:
    """RSS now, once the libraries every variant uses are loaded (their size is not the variant's)."""
    import jsonschema  # noqa: F401
    import orjson  # noqa: F401
    import pyarrow.json
    import pyarrow.parquet  # noqa: F401

    import datamill.quality.export  # noqa: F401

    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _result(t0: float, rss0: float) -> dict[str, float]:
    """Seconds, and the memory the measured code added to the forked child's (peak minus start)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": time.perf_counter() - t0, "added_rss_mb": max(0.0, peak - rss0)}


def _datamill(run_dir: str, out: str, schema: bool) -> dict[str, float]:
    from datamill.quality.export import Profile, export_file

    profile = Profile("checked", schema=SCHEMA) if schema else Profile("internal_full")
    rss0, t0 = _rss_now_mb(), time.perf_counter()
    export_file(run_dir, profile, "parquet", out)
    return _result(t0, rss0)


def _bare(run_dir: str, out: str) -> dict[str, float]:
    import orjson
    import pyarrow as pa
    import pyarrow.parquet as pq

    rss0, t0 = _rss_now_mb(), time.perf_counter()
    records: list[Any] = []
    for part in sorted((Path(run_dir) / "parts").glob("*.jsonl")):
        with open(part, "rb") as f:
            records.extend(orjson.loads(line) for line in f)
    pq.write_table(pa.Table.from_pylist(records), out, compression="zstd")
    return _result(t0, rss0)


def _bare_write(run_dir: str, out: str) -> dict[str, float]:
    import orjson
    import pyarrow as pa
    import pyarrow.parquet as pq

    records: list[Any] = []
    for part in sorted((Path(run_dir) / "parts").glob("*.jsonl")):
        with open(part, "rb") as f:
            records.extend(orjson.loads(line) for line in f)
    rss0, t0 = _rss_now_mb(), time.perf_counter()
    pq.write_table(pa.Table.from_pylist(records), out, compression="zstd")
    return _result(t0, rss0)


def run_export_bench(size: int, repeat: int = 3) -> dict[str, Any]:
    from datamill.engine import LocalExecutor, execute
    from datamill.recipe import load_text

    text = RECIPE.format(size=size)
    with tempfile.TemporaryDirectory(prefix="datamill-bench-export-") as tmp:
        loaded = load_text(text, "<bench>", Path(tmp))
        run_dir = str(Path(tmp) / "run")
        records = execute(loaded, text, run_dir, executor=LocalExecutor(2)).records
        out = str(Path(tmp) / "out.parquet")
        kinds = {
            "datamill": lambda: in_fork(_datamill, run_dir, out, False),
            "datamill_schema": lambda: in_fork(_datamill, run_dir, out, True),
            "bare": lambda: in_fork(_bare, run_dir, out),
            "bare_write": lambda: in_fork(_bare_write, run_dir, out),
        }
        runs: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
        for _ in range(repeat):
            for name, fn in kinds.items():
                runs[name].append(fn())
        out_bytes = Path(out).stat().st_size
    best = {k: min(v, key=lambda r: r["seconds"]) for k, v in runs.items()}
    return {
        "slots": size,
        "records": records,
        "repeat": repeat,
        "parquet_bytes": out_bytes,
        "best": best,
        "records_per_s": {k: records / v["seconds"] for k, v in best.items()},
        "ratio_datamill_vs_bare": best["datamill"]["seconds"] / best["bare"]["seconds"],
        "ratio_datamill_vs_bare_write": best["datamill"]["seconds"] / best["bare_write"]["seconds"],
        "ratio_schema_vs_bare": best["datamill_schema"]["seconds"] / best["bare"]["seconds"],
    }
