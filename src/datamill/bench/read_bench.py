"""``datamill bench read``: what checking parts costs a reader (issue 21).

One lambda-traces run dir of about 8 records per slot is made once; then, alternating, in fresh
forked processes: ``checked`` streams it as ``datamill cat`` does (meta, size and xxh3-128 hash of
every part), ``unchecked`` does the same with the hash check off (meta and size only), and
``bare`` reads the part files in order with no check at all (all three into /dev/null, and the
two ``cat`` variants again into a file, as ``datamill cat > out.jsonl`` does). Both ``parse`` rows also decode every
record with orjson, as ``verify`` and the Python reader do.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from datamill.forked import in_fork


def _cat(run_dir: str, verify_hash: bool, dest: str = os.devnull) -> float:
    from datamill.store.reader import write_in_order

    t0 = time.perf_counter()
    with open(dest, "wb") as out:
        write_in_order(run_dir, out, verify_hash=verify_hash)
    return time.perf_counter() - t0


def _bare(run_dir: str) -> float:
    from datamill.store.rundir import RunDir

    t0 = time.perf_counter()
    with open(os.devnull, "wb") as out:
        for part in RunDir(run_dir).parts():
            out.write(part.path.read_bytes())
    return time.perf_counter() - t0


def _parse(run_dir: str, verify_hash: bool) -> float:
    import orjson

    from datamill.store.integrity import part_lines
    from datamill.store.rundir import RunDir

    t0 = time.perf_counter()
    n = 0
    for part in RunDir(run_dir).parts():
        for line in part_lines(part, verify_hash):
            orjson.loads(line)
            n += 1
    return time.perf_counter() - t0


def run_read_bench(size: int, repeat: int = 5) -> dict[str, Any]:
    from datamill.engine import LocalExecutor, execute
    from datamill.recipe import load_file
    from datamill.recipes import builtin_path

    path = builtin_path("lambda-traces")
    assert path is not None
    loaded = load_file(path).with_overrides(size=size)
    with tempfile.TemporaryDirectory(prefix="datamill-bench-read-") as tmp:
        run_dir = str(Path(tmp) / "run")
        records = execute(loaded, path.read_text(), run_dir, executor=LocalExecutor(2)).records
        nbytes = sum(p.stat().st_size for p in (Path(run_dir) / "parts").glob("*.jsonl"))
        kinds = ("checked", "unchecked", "bare", "file_checked", "file_unchecked", "parse_checked", "parse_unchecked")
        dest = str(Path(tmp) / "cat.jsonl")
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for _ in range(repeat):
            _bare(run_dir)  # warm the page cache for every variant alike
            times["checked"].append(in_fork(_cat, run_dir, True))
            times["unchecked"].append(in_fork(_cat, run_dir, False))
            times["bare"].append(in_fork(_bare, run_dir))
            times["file_checked"].append(in_fork(_cat, run_dir, True, dest))
            times["file_unchecked"].append(in_fork(_cat, run_dir, False, dest))
            times["parse_checked"].append(in_fork(_parse, run_dir, True))
            times["parse_unchecked"].append(in_fork(_parse, run_dir, False))
    best = {k: min(v) for k, v in times.items()}
    return {
        "slots": size,
        "records": records,
        "bytes": nbytes,
        "repeat": repeat,
        "seconds": best,
        "ratio_cat_checked_vs_unchecked": best["checked"] / best["unchecked"],
        "ratio_cat_checked_vs_bare": best["checked"] / best["bare"],
        "ratio_cat_to_file_checked_vs_unchecked": best["file_checked"] / best["file_unchecked"],
        "ratio_parse_checked_vs_unchecked": best["parse_checked"] / best["parse_unchecked"],
    }
