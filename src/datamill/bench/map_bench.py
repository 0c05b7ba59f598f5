"""``datamill bench map``: a map over N existing rows against a bare aiohttp client over the same rows.

The shape seed 002 runs: a table of short rows (JSONL or Parquet), one request per row, answers
written beside the input columns. Both clients talk to the same fake server (its own process,
fixed latency) at the same concurrency:

- ``raw``: ``concurrency`` aiohttp tasks pulling rows from the file as it is read, one request
  per row, each reply parsed with orjson — the floor;
- ``datamill``: ``execute`` of the equivalent ``source:`` recipe (default part size, so many
  parts) on ``workers`` processes: source index, templates, run-wide limiter, cache, attempt log,
  part commits with fsync, everything.

Peak RSS is the largest of the measuring process and its workers. After the timed run the output
is checked against the input, row by row (every row out, in order, input columns identical).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from datamill.bench.fake_server import running
from datamill.forked import in_fork

PROMPT = "Score this candidate from 1 to 10: {text}"


def _rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0


def make_rows(path: Path, n: int, fmt: str) -> None:
    """``n`` short rows (id, text, score_hint), in ``fmt`` (jsonl or parquet)."""
    rows = ({"id": f"c{i:07d}", "text": f"candidate {i}: a short answer about item {i % 977}", "hint": i % 10}
            for i in range(n))  # fmt: skip
    if fmt == "jsonl":
        with open(path, "wb") as f:
            for r in rows:
                f.write(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE))
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("hint", pa.int64())])
    with pq.ParquetWriter(path, schema) as w:
        batch: list[dict[str, Any]] = []
        for r in rows:
            batch.append(r)
            if len(batch) == 10_000:
                w.write_table(pa.Table.from_pylist(batch, schema))
                batch = []
        if batch:
            w.write_table(pa.Table.from_pylist(batch, schema))


def _texts(path: Path, fmt: str) -> Iterator[str]:
    if fmt == "jsonl":
        with open(path, "rb") as f:
            for line in f:
                yield orjson.loads(line)["text"]
        return
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(str(path)).iter_batches(batch_size=4096, columns=["text"]):
        yield from batch.column(0).to_pylist()


def _raw(base_url: str, path: Path, fmt: str, concurrency: int) -> dict[str, Any]:
    import aiohttp

    async def main() -> int:
        ok = 0
        rows = enumerate(_texts(path, fmt))
        url = base_url + "/chat/completions"
        headers = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

            async def worker() -> None:
                nonlocal ok
                for i, text in rows:
                    payload = {
                        "model": "stub-model",
                        "messages": [{"role": "user", "content": PROMPT.format(text=text)}],
                        "temperature": 0.0,
                        "max_tokens": 16,
                        "seed": i,
                    }
                    async with session.post(url, data=orjson.dumps(payload), headers=headers) as resp:
                        body = orjson.loads(await resp.read())
                        if body["choices"][0]["message"]["content"]:
                            ok += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return ok

    t0 = time.perf_counter()
    ok = asyncio.run(main())
    return {"items": ok, "seconds": time.perf_counter() - t0, "peak_rss_mb": _rss_mb()}


def recipe_text(base_url: str, path: Path, fmt: str, concurrency: int, part_size: int | None = None) -> str:
    output = f"\noutput: {{part_size: {part_size}}}" if part_size else ""
    return f"""
name: bench-map
seed: 1
source: {{path: "{path}", format: {fmt}, key: id}}
model: {{backend: openai, base_url: "{base_url}", model: stub-model, concurrency: {concurrency}, timeout_s: 60}}
columns:
  score: {{llm: {{prompt: "{PROMPT.format(text="{{ text }}")}", max_tokens: 16, temperature: 0.0}}}}{output}
"""


def _datamill(base_url: str, path: Path, fmt: str, concurrency: int, workers: int, workdir: str) -> dict[str, Any]:
    from datamill.engine import LocalExecutor, execute
    from datamill.recipe import load_text

    text = recipe_text(base_url, path, fmt, concurrency)
    t0 = time.perf_counter()
    loaded = load_text(text, "bench-map.yaml", Path(workdir))  # the source scan is part of the run
    summary = execute(loaded, text, Path(workdir) / "run", executor=LocalExecutor(workers))
    seconds = time.perf_counter() - t0
    return {"items": summary.records, "failed": summary.slots_failed, "seconds": seconds,
            "parts": summary.parts_run, "peak_rss_mb": _rss_mb()}  # fmt: skip


def check_output(run_dir: Path, path: Path, fmt: str) -> dict[str, Any]:
    """Every input row out, in order, its input columns identical, and an answer beside them."""
    from datamill.store.reader import iter_dataset_lines

    rows: Iterator[dict[str, Any]]
    if fmt == "jsonl":
        rows = (orjson.loads(line) for line in open(path, "rb"))  # noqa: SIM115 - read to the end below
    else:
        import pyarrow.parquet as pq

        rows = (r for b in pq.ParquetFile(str(path)).iter_batches(batch_size=4096) for r in b.to_pylist())
    n = mismatched = 0
    out = iter_dataset_lines(run_dir)
    for row in rows:
        line = next(out, None)
        if line is None:
            break
        rec = orjson.loads(line)
        if rec["sample_id"] != row["id"] or any(rec[k] != v for k, v in row.items()) or not rec.get("score"):
            mismatched += 1
        n += 1
    extra = sum(1 for _ in out)
    return {"rows_checked": n, "mismatched": mismatched, "extra_records": extra}


def run_map_bench(
    rows: int, fmt: str, workers: list[int], concurrency: int, latency_ms: float, raw: bool = True
) -> dict[str, Any]:
    """Start the fake server; measure the bare client once and datamill once per worker count."""
    import aiohttp  # noqa: F401

    import datamill.engine  # noqa: F401

    result: dict[str, Any] = {"rows": rows, "format": fmt, "concurrency": concurrency, "latency_ms": latency_ms}
    with (
        running("--latency-ms", str(latency_ms)) as base_url,
        tempfile.TemporaryDirectory(prefix="datamill-bench-map-") as tmp,
    ):
        path = Path(tmp) / f"rows.{fmt}"
        in_fork(make_rows, path, rows, fmt)  # not in this process: forked measurements would inherit its heap
        result["input_mb"] = round(path.stat().st_size / 2**20, 1)
        if raw:
            result["raw"] = in_fork(_raw, base_url, path, fmt, concurrency)
        for w in workers:
            work = Path(tmp) / f"w{w}"
            work.mkdir()
            r = in_fork(_datamill, base_url, path, fmt, concurrency, w, str(work))
            r["check"] = check_output(work / "run", path, fmt)
            result[f"datamill_w{w}"] = r
    for key, r in result.items():
        if isinstance(r, dict) and "seconds" in r:
            r["items_per_s"] = r["items"] / r["seconds"] if r["seconds"] else 0.0
            if "raw" in result and key != "raw":
                r["ratio"] = r["items_per_s"] / result["raw"]["items_per_s"]
    return result


def print_map_bench(result: dict[str, Any]) -> None:
    print(
        f"map bench: {result['rows']:,} rows ({result['format']}, {result['input_mb']} MB), "
        f"concurrency {result['concurrency']}, latency {result['latency_ms']:g} ms"
    )
    for key, r in result.items():
        if not (isinstance(r, dict) and "seconds" in r):
            continue
        ratio = f"  ratio {r['ratio']:.3f}" if "ratio" in r else ""
        check = ""
        if "check" in r:
            c = r["check"]
            ok = c["rows_checked"] == result["rows"] and not c["mismatched"] and not c["extra_records"]
            check = f"  output {'OK' if ok else 'WRONG'} ({c['rows_checked']:,} rows checked)"
        print(f"  {key:<12} {r['items']:>8,} items {r['seconds']:>8.1f}s {r['items_per_s']:>7,.1f}/s "
              f"peak RSS {r['peak_rss_mb']:>4.0f} MB{ratio}{check}")  # fmt: skip


# -- packing ---------------------------------------------------------------------------------------

PACK_RULES = " ".join(f"Rule {i}: judge the candidate on its merits and keep the answer short." for i in range(80))


def _pack_recipe(src: Path, base_url: str | None, k: int, max_tokens: int, system: str) -> str:
    model = (f'{{backend: openai, base_url: "{base_url}", model: stub-model, concurrency: 32}}' if base_url
             else "{threads: 2}")  # fmt: skip
    return f"""
name: bench-pack
seed: 1
source: {{path: "{src}", key: id}}
model: {model}
output: {{part_size: {16 * 3 * 5}}}
columns:
  answer: {{llm: {{prompt: "Echo the code {{{{ code }}}} of candidate {{{{ id }}}}.", system: "{system}",
                   max_tokens: {max_tokens}, pack: {k}}}}}
"""


def _pack_run(src: Path, base_url: str | None, k: int, max_tokens: int, system: str, workdir: str) -> dict[str, Any]:
    from datamill.engine import LocalExecutor, execute
    from datamill.llm.telemetry import read_attempts
    from datamill.recipe import load_text
    from datamill.store.reader import iter_dataset_lines

    text = _pack_recipe(src, base_url, k, max_tokens, system)
    out = Path(workdir) / f"k{k}"
    t0 = time.perf_counter()
    summary = execute(load_text(text, "bench-pack.yaml", Path(workdir)), text, out, executor=LocalExecutor(1))
    seconds = time.perf_counter() - t0
    attempts = [a for a in read_attempts(out / "logs" / "attempts.jsonl") if a.get("status") != "step_down"]
    sent = [a for a in attempts if a.get("status") != "cached"]
    rows = [orjson.loads(line) for line in iter_dataset_lines(out)]
    # An answer is tied to its row when it carries the row's own code (and no other row's).
    matched = sum(1 for r in rows if isinstance(r.get("answer"), str) and r["code"] in r["answer"])
    return {
        "k": k,
        "rows": len(rows),
        "failed": summary.slots_failed,
        "requests": len(sent),
        "packed_requests": sum(1 for a in sent if int(a.get("pack") or 1) > 1),
        "fallback_items": sum(1 for a in sent if int(a.get("pack") or 1) == 1 and a.get("status") in ("ok", "repaired"))
        if k > 1
        else 0,
        "prompt_tokens": sum(int(a.get("prompt_tokens") or 0) for a in sent),
        "completion_tokens": sum(int(a.get("completion_tokens") or 0) for a in sent),
        "answers_matched": matched,
        "seconds": seconds,
    }


def run_pack_bench(rows: int, ks: list[int], embedded: bool = False) -> dict[str, Any]:
    """Prompt tokens sent with ``pack: k`` over rows sharing a ~1K-token system prompt (fake server),
    or the fallback rate of packing on the embedded model (``embedded``)."""
    result: dict[str, Any] = {"rows": rows, "embedded": embedded, "runs": []}
    system = PACK_RULES if not embedded else "You repeat codes exactly."
    with contextlib.ExitStack() as stack:
        base_url = None if embedded else stack.enter_context(running())
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="datamill-bench-pack-"))
        src = Path(tmp) / "rows.jsonl"
        rng = random.Random(7)
        with open(src, "wb") as f:
            for i in range(rows):
                code = f"{rng.randint(0, 36**5):05x}"[:5]
                f.write(orjson.dumps({"id": f"c{i}", "code": f"Q{code}"}, option=orjson.OPT_APPEND_NEWLINE))
        for k in ks:
            result["runs"].append(in_fork(_pack_run, src, base_url, k, 48 if embedded else 64, system, tmp))
    base = next((r for r in result["runs"] if r["k"] == 1), None)
    for r in result["runs"]:
        r["prompt_tokens_vs_k1"] = round(r["prompt_tokens"] / base["prompt_tokens"], 4) if base else None
        r["fallback_rate"] = round(r["fallback_items"] / r["rows"], 4) if r["rows"] else None
    return result


def print_pack_bench(result: dict[str, Any]) -> None:
    where = "embedded SmolLM2-135M" if result["embedded"] else "fake server, ~1K-token shared system prompt"
    print(f"pack bench: {result['rows']:,} rows, {where}")
    for r in result["runs"]:
        vs = "" if r["prompt_tokens_vs_k1"] is None else f" ({r['prompt_tokens_vs_k1']:.3f} of k=1)"
        print(f"  k={r['k']:<3} {r['requests']:>6,} requests  {r['prompt_tokens']:>10,} prompt tokens{vs}  "
              f"fallback {r['fallback_rate']:.1%}  answers tied to their row {r['answers_matched']:,}/{r['rows']:,}  "
              f"{r['seconds']:.1f}s")  # fmt: skip


# -- ETA -------------------------------------------------------------------------------------------


def run_eta_bench(rows: int, latency_ms: float, concurrency: int, at: float = 0.10) -> dict[str, Any]:
    """`datamill map` in a subprocess; `status` read from outside once ``at`` of the rows are done:
    its ETA against the actual remaining time."""
    from datamill.api import status

    with (
        running("--latency-ms", str(latency_ms)) as base_url,
        tempfile.TemporaryDirectory(prefix="datamill-bench-eta-") as tmp,
    ):
        src = Path(tmp) / "rows.jsonl"
        make_rows(src, rows, "jsonl")
        out = Path(tmp) / "run"
        proc = subprocess.Popen(
            [sys.executable, "-m", "datamill", "map", str(src), "--prompt", PROMPT.format(text="{{ text }}"),
             "--column", "score", "--key", "id", "--out", str(out), "--model-base-url", base_url,
             "--model", "stub-model", "--concurrency", str(concurrency), "--progress", "none"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        t0 = time.monotonic()
        seen: dict[str, Any] = {}
        while proc.poll() is None:
            time.sleep(0.25)
            if seen or not (out / "manifest.json").exists():
                continue
            st = status(out)
            done = st.summary.slots_done + st.summary.slots_failed
            if done >= at * rows and st.eta_s is not None:
                seen = {"t": time.monotonic() - t0, "done": done, "eta_s": st.eta_s}
        end = time.monotonic() - t0
    actual = end - seen["t"]
    return {"rows": rows, "latency_ms": latency_ms, "concurrency": concurrency, "at": at, "read_at_s": seen["t"],
            "done_at_read": seen["done"], "eta_s": seen["eta_s"], "actual_remaining_s": actual,
            "error": abs(seen["eta_s"] - actual) / actual, "run_s": end}  # fmt: skip
