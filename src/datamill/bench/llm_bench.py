"""``datamill bench llm``: datamill's LLM path against a bare aiohttp client, same server, same run.

The fake server (``datamill bench serve-fake``) runs in its own process. Each measurement runs
in a fresh forked process, so CPU seconds and peak RSS are its own:

- ``raw``: n chat-completion requests from one aiohttp session under a semaphore of
  ``concurrency``, each body parsed with orjson — the floor;
- ``datamill``: ``datamill run`` of a recipe with one LLM column of the same shape (one worker):
  plan, templates, cache, attempt log, part commit with fsync, everything.

The ratio is datamill items/s over raw items/s.
"""

from __future__ import annotations

import asyncio
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from datamill.bench.fake_server import running
from datamill.forked import in_fork

PROMPT = "Write one sentence about topic {n}"


def _usage() -> tuple[float, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024.0


def _raw(base_url: str, n: int, concurrency: int) -> dict[str, Any]:
    import aiohttp

    async def main() -> int:
        sem = asyncio.Semaphore(concurrency)
        ok = 0
        url = base_url + "/chat/completions"
        headers = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

            async def one(i: int) -> None:
                nonlocal ok
                payload = {
                    "model": "stub-model",
                    "messages": [{"role": "user", "content": PROMPT.format(n=i)}],
                    "temperature": 0.7,
                    "max_tokens": 64,
                    "seed": i,
                }
                async with sem, session.post(url, data=orjson.dumps(payload), headers=headers) as resp:
                    body = orjson.loads(await resp.read())
                    if body["choices"][0]["message"]["content"]:
                        ok += 1

            await asyncio.gather(*(one(i) for i in range(n)))
        return ok

    cpu0, _ = _usage()
    t0 = time.perf_counter()
    ok = asyncio.run(main())
    seconds = time.perf_counter() - t0
    cpu1, rss = _usage()
    return {"items": ok, "seconds": seconds, "cpu_s": cpu1 - cpu0, "peak_rss_mb": rss}


def _datamill(base_url: str, n: int, concurrency: int, workdir: str) -> dict[str, Any]:
    text = f"""
name: bench-llm
seed: 1
size: {n}
model: {{backend: openai, base_url: "{base_url}", model: stub-model, concurrency: {concurrency}, timeout_s: 60}}
columns:
  topic: {{sampler: integer, low: 0, high: 1000000}}
  answer: {{llm: {{prompt: "{PROMPT.format(n="{{ topic }}")}", max_tokens: 64, temperature: 0.7}}}}
output: {{part_size: {n}}}
"""
    return _timed_run(text, workdir)


def _timed_run(text: str, workdir: str) -> dict[str, Any]:
    """``datamill run`` of recipe ``text`` on one worker: items, seconds, CPU, peak RSS."""
    from datamill.engine import LocalExecutor, execute
    from datamill.recipe import load_text

    loaded = load_text(text, "bench.yaml", Path(workdir))
    out = Path(workdir) / "run"
    cpu0, _ = _usage()
    t0 = time.perf_counter()
    summary = execute(loaded, text, out, executor=LocalExecutor(1))
    seconds = time.perf_counter() - t0
    cpu1, rss = _usage()
    return {"items": summary.records, "seconds": seconds, "cpu_s": cpu1 - cpu0, "peak_rss_mb": rss, "out": str(out)}


def _reset(root: str) -> None:
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(root + "/reset", method="POST", data=b""), timeout=10).close()


def run_llm_bench(n: int, concurrency: int, latency_ms: float, repeat: int = 1) -> dict[str, Any]:
    """Start the fake server, measure both clients ``repeat`` times (alternating), return the best of each."""
    # Import what the measured code imports before forking, so neither pays for imports.
    import aiohttp  # noqa: F401

    import datamill.engine  # noqa: F401

    with running("--latency-ms", str(latency_ms)) as base_url:
        root = base_url.removesuffix("/v1")
        runs: dict[str, list[dict[str, Any]]] = {"raw": [], "datamill": []}
        for _ in range(repeat):
            _reset(root)
            runs["raw"].append(in_fork(_raw, base_url, n, concurrency))
            with tempfile.TemporaryDirectory(prefix="datamill-bench-llm-") as tmp:
                _reset(root)
                runs["datamill"].append(in_fork(_datamill, base_url, n, concurrency, tmp))
    best = {k: min(v, key=lambda r: r["seconds"]) for k, v in runs.items()}
    for r in best.values():
        r["items_per_s"] = r["items"] / r["seconds"] if r["seconds"] else 0.0
    return {
        "n": n,
        "concurrency": concurrency,
        "latency_ms": latency_ms,
        "repeat": repeat,
        "raw": best["raw"],
        "datamill": best["datamill"],
        "ratio": best["datamill"]["items_per_s"] / best["raw"]["items_per_s"] if best["raw"]["items_per_s"] else None,
        "all_runs": runs,
    }


def print_llm_bench(result: dict[str, Any]) -> None:
    print(
        f"llm bench: n={result['n']:,} concurrency={result['concurrency']} latency={result['latency_ms']:g} ms "
        f"(best of {result['repeat']})"
    )
    for label in ("datamill", "raw"):
        r = result[label]
        print(
            f"  {label:<9} {r['items']:>7,} items  {r['seconds']:>7.2f}s  {r['items_per_s']:>9,.0f} items/s  "
            f"cpu {r['cpu_s']:.2f}s  peak RSS {r['peak_rss_mb']:.0f} MB"
        )
    print(f"  ratio datamill/raw: {result['ratio']:.3f}")


EMBEDDED_PROMPT = "Write a short sentence about the number {n}."


def _embedded_bare(n: int, max_tokens: int, threads: int) -> dict[str, Any]:
    from llama_cpp import Llama

    from datamill.llm.backends.embedded import default_model_path
    from datamill.seeds import slot_seed, sub_seed

    cpu0, _ = _usage()
    t0 = time.perf_counter()
    llm = Llama(
        model_path=str(default_model_path()),
        n_ctx=2048,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
        seed=0,
    )
    tokens = 0
    for i in range(n):
        out = llm.create_chat_completion(
            messages=[{"role": "user", "content": EMBEDDED_PROMPT.format(n=i)}],
            temperature=0.7,
            max_tokens=max_tokens,
            # The seed datamill sends for slot i of the recipe below: the same work, token for token.
            seed=sub_seed(slot_seed(1, i), "llm:answer") & 0x7FFFFFFF,
        )
        tokens += int(out["usage"]["completion_tokens"])  # type: ignore[index]
    seconds = time.perf_counter() - t0
    cpu1, rss = _usage()
    return {"items": n, "completion_tokens": tokens, "seconds": seconds, "cpu_s": cpu1 - cpu0, "peak_rss_mb": rss}


def _embedded_datamill(n: int, max_tokens: int, threads: int, workdir: str) -> dict[str, Any]:
    from datamill.llm.telemetry import read_attempts

    text = f"""
name: bench-embedded
seed: 1
size: {n}
model: {{threads: {threads}}}
columns:
  n: {{expr: "slot"}}
  answer: {{llm: {{prompt: "{EMBEDDED_PROMPT.format(n="{{ n }}")}", max_tokens: {max_tokens}, temperature: 0.7}}}}
output: {{part_size: {n}}}
"""
    result = _timed_run(text, workdir)
    attempts = read_attempts(Path(result["out"]) / "logs" / "attempts.jsonl")
    result["completion_tokens"] = sum(int(a.get("completion_tokens") or 0) for a in attempts)
    return result


def run_embedded_bench(n: int, max_tokens: int, threads: int | None = None) -> dict[str, Any]:
    """The embedded backend (its model in a child process) against bare llama-cpp-python in process,
    on the same prompts, seeds and threads, model load included in both."""
    import llama_cpp

    import datamill.engine  # noqa: F401
    from datamill.llm.backends.embedded import usable_cores

    threads = threads or usable_cores()
    bare = in_fork(_embedded_bare, n, max_tokens, threads)
    with tempfile.TemporaryDirectory(prefix="datamill-bench-emb-") as tmp:
        ours = in_fork(_embedded_datamill, n, max_tokens, threads, tmp)
    for r in (bare, ours):
        r["tokens_per_s"] = r["completion_tokens"] / r["seconds"]
        r["items_per_s"] = r["items"] / r["seconds"]
    return {
        "n": n,
        "max_tokens": max_tokens,
        "threads": threads,
        "system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
        "bare": bare,
        "datamill": ours,
        "ratio_tokens_per_s": ours["tokens_per_s"] / bare["tokens_per_s"],
        "ratio_items_per_s": ours["items_per_s"] / bare["items_per_s"],
    }


def print_embedded_bench(result: dict[str, Any]) -> None:
    print(
        f"embedded bench: {result['n']} prompts, max_tokens={result['max_tokens']}, threads={result['threads']} "
        "(model load included)"
    )
    print(f"  llama.cpp build: {result['system_info']}")
    for label in ("datamill", "bare"):
        r = result[label]
        print(
            f"  {label:<9} {r['items']:>4} answers  {r['completion_tokens']:>6} tokens  {r['seconds']:>7.2f}s  "
            f"{r['tokens_per_s']:>6.1f} tok/s  {r['items_per_s']:.2f} answers/s  peak RSS {r['peak_rss_mb']:.0f} MB"
        )
    print(
        f"  ratio datamill/bare: {result['ratio_tokens_per_s']:.3f} (tokens/s), "
        f"{result['ratio_items_per_s']:.3f} (answers/s)"
    )
