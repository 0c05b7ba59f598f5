"""Benchmarks: datamill against the bare floor in the same run (docs/benchmarks.md), and the
fake OpenAI-compatible server they and the tests use."""

from __future__ import annotations

import argparse
import os
from typing import Any

import orjson

from datamill.cli.common import Parser, non_negative, positive, write_json
from datamill.errors import UsageError


def cmd_bench(args: argparse.Namespace) -> int:
    from datamill.bench.lambda_bench import run_lambda_bench

    result = run_lambda_bench(args.size, args.workers, seed=args.seed, keep=args.keep)
    d, b = result["datamill"], result["bare"]
    print(f"lambda-traces: {args.size:,} slots, {args.workers} workers, {result['cpus']} cpus")
    for label, r in (("datamill", d), ("bare", b)):
        print(
            f"  {label:<9} {r['records']:>12,} records  {r['seconds']:>8.2f}s  "
            f"{r['records_per_s']:>10,.0f} records/s  peak RSS {r['peak_rss_mb']:.0f} MB"
        )
    print(f"  ratio datamill/bare: {result['ratio']}")
    write_json(args.json, result)
    return 0 if result["same_records"] else 1


def cmd_serve_fake(args: argparse.Namespace) -> int:
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        raise UsageError(f"--host: the fake server listens on loopback only, got {args.host}")
    if not 0.0 <= args.fault_rate <= 1.0:
        raise UsageError(f"--fault-rate: expected a share in [0, 1], got {args.fault_rate}")
    from datamill.bench.fake_server import FakeServer, serve

    server = FakeServer(
        args.latency_ms,
        args.fault_rate,
        args.seed,
        args.timeout_sleep_s,
        args.echo_auth,
        tuple(args.reject_format),
        args.max_context,
        args.reject_status,
        args.reject_body,
    )
    serve(args.host, args.port, server)
    return 0


def cmd_bench_llm(args: argparse.Namespace) -> int:
    from datamill.bench.llm_bench import print_llm_bench, run_llm_bench

    result = run_llm_bench(args.n, args.concurrency, args.latency_ms, repeat=args.repeat)
    print_llm_bench(result)
    write_json(args.json, result)
    return 0


def cmd_bench_map(args: argparse.Namespace) -> int:
    from datamill.bench.map_bench import print_map_bench, run_map_bench

    workers = [int(w) for w in args.workers.split(",")]
    result = run_map_bench(args.rows, args.format, workers, args.concurrency, args.latency_ms, raw=not args.no_raw)
    print_map_bench(result)
    write_json(args.json, result)
    bad = [r for r in result.values() if isinstance(r, dict) and r.get("check", {}).get("mismatched")]
    return 1 if bad else 0


def cmd_bench_pack(args: argparse.Namespace) -> int:
    from datamill.bench.map_bench import print_pack_bench, run_pack_bench

    result = run_pack_bench(args.rows, [int(k) for k in args.k.split(",")], embedded=args.embedded)
    print_pack_bench(result)
    write_json(args.json, result)
    return 0


def cmd_bench_eta(args: argparse.Namespace) -> int:
    from datamill.bench.map_bench import run_eta_bench

    r = run_eta_bench(args.rows, args.latency_ms, args.concurrency)
    print(f"eta bench: map of {r['rows']:,} rows, latency {r['latency_ms']:g} ms, concurrency {r['concurrency']}")
    print(f"  status read at {r['read_at_s']:.1f}s ({r['done_at_read']:,} rows done): ETA {r['eta_s']:.1f}s")
    print(f"  actual remaining {r['actual_remaining_s']:.1f}s (run {r['run_s']:.1f}s): error {r['error']:.1%}")
    write_json(args.json, r)
    return 0


def cmd_bench_verify_memory(args: argparse.Namespace) -> int:
    from datamill.bench.verify_bench import run_verify_memory_bench

    sizes = [int(x) for x in args.sizes.split(",")]
    rows = run_verify_memory_bench(sizes, args.shape, args.tokens, args.dir, args.keep)
    print(f"verify memory bench ({args.shape}, {'with' if args.tokens else 'no'} token counts)")
    for r in rows:
        print(
            f"  {r['records']:>12,} records  peak RSS {r['peak_rss_mb']:>7.1f} MB  verify {r['verify_s']:>8.2f}s"
            f"  ({r['us_per_record']:.2f} us/record; data made in {r['made_s']:.0f}s)"
        )
    if len(rows) > 1:
        print(f"  RSS largest/smallest: {rows[-1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.3f}")
    return 0


def cmd_bench_verify(args: argparse.Namespace) -> int:
    from datamill.bench.verify_bench import run_verify_bench

    r = run_verify_bench(args.n, args.tokens, args.repeat, args.file, args.gates)
    print(f"verify bench: {r['n']:,} items of ~{r['mean_tokens']:,.0f} tokens in all (best of {args.repeat})")
    print(f"  datamill verify  {r['verify_s']:>7.3f}s  {r['verify_s_per_100']:.4f} s per 100 items")
    print(f"  bare tokenize    {r['bare_s']:>7.3f}s  {r['bare_s_per_100']:.4f} s per 100 items")
    print(f"  ratio verify/bare: {r['ratio']:.3f} (time; lower is better)")
    return 0


def cmd_bench_dedup(args: argparse.Namespace) -> int:
    from datamill.bench.dedup_bench import run_dedup_bench, run_semantic_bench

    if args.method == "semantic":
        sr = run_semantic_bench(args.n, exact=not args.staged_only)
        print(f"semantic dedup bench: {sr['n']:,} texts of 12-24 words (5% planted edits), cosine 0.9, "
              f"clustered path (embeddings {sr['embeddings_mb']:.0f} MB on disk)")  # fmt: skip
        for side in ("clustered", "exact"):
            if side in sr:
                d = sr[side]
                print(f"  {side:<10} {d['seconds']:>8.2f}s ({d['cpu_seconds']:.2f}s CPU)  {d['pairs']:,} pairs  "
                      f"peak RSS {d['peak_rss_mb']:.0f} MB ({d['before_mb']:.0f} MB before: texts, model)")  # fmt: skip
        if "recall" in sr:
            print(f"  recall of the exact pairs: {sr['recall']:.4f} ({sr['extra']} pairs not in the exact set)")
        return 0
    r = run_dedup_bench(args.n, args.repeat, memory_mb=args.memory_mb, memory_path=not args.staged_only,
                        others=not args.staged_only, collapse=args.collapse)  # fmt: skip
    print(f"dedup bench: {r['n']:,} texts of 25 words (2% planted near-duplicates"
          + (f", a collapse cluster of {r['collapse']:,}" if r["collapse"] else "")
          + f"), MinHash 128 perms, threshold 0.8, staged budget {r['memory_mb']} MB")  # fmt: skip
    for side in ("staged", "memory", "bare", "datasketch"):
        if side in r:
            d = r[side]
            found = f"{d['rejected']:,} rejected" if "rejected" in d else f"{d['candidates']:,} candidates"
            per, rss = d["seconds"] / r["n"] * 1e6, d["peak_rss_mb"]
            print(f"  {side:<10} {d['seconds']:>8.2f}s ({d['cpu_seconds']:.2f}s CPU)  {per:>6.1f} us/text  {found}  "
                  f"peak RSS {rss:.0f} MB")  # fmt: skip
    for side in ("memory", "bare", "datasketch"):
        if f"staged/{side}" in r:
            print(f"  ratio staged/{side}: {r[f'staged/{side}']:.3f} wall, {r[f'staged/{side} cpu']:.3f} CPU "
                  "(lower is better)")  # fmt: skip
    if "same_rejected" in r:
        print(f"  same rejected count staged vs memory: {r['same_rejected']}")
    return 0


def cmd_bench_read(args: argparse.Namespace) -> int:
    from datamill.bench.read_bench import run_read_bench

    r = run_read_bench(args.size, args.repeat)
    t = r["seconds"]
    print(f"read bench: {r['records']:,} records in {r['bytes'] / 1e6:,.0f} MB of parts, best of {r['repeat']}")
    print(f"  cat, checked (meta, size, xxh3-128)   {t['checked']:.3f}s")
    print(f"  cat, unchecked hash (meta, size)      {t['unchecked']:.3f}s")
    print(f"  bare read of the part files           {t['bare']:.3f}s")
    print(f"  cat into a file, checked              {t['file_checked']:.3f}s")
    print(f"  cat into a file, unchecked hash       {t['file_unchecked']:.3f}s")
    print(f"  parse every record, checked           {t['parse_checked']:.3f}s")
    print(f"  parse every record, unchecked hash    {t['parse_unchecked']:.3f}s")
    print(f"  ratio cat into a file checked/unchecked: {r['ratio_cat_to_file_checked_vs_unchecked']:.3f}")
    print(
        f"  ratio cat checked/unchecked: {r['ratio_cat_checked_vs_unchecked']:.3f}, checked/bare: "
        f"{r['ratio_cat_checked_vs_bare']:.3f}; parse checked/unchecked: {r['ratio_parse_checked_vs_unchecked']:.3f}"
    )
    write_json(args.json, r)
    return 0


def cmd_bench_export(args: argparse.Namespace) -> int:
    from datamill.bench.export_bench import run_export_bench

    r = run_export_bench(args.size, args.repeat)
    print(f"export bench: {r['records']:,} records to Parquet (zstd), {r['parquet_bytes'] / 1e6:.1f} MB, "
          f"best of {r['repeat']}")  # fmt: skip
    labels = {
        "datamill": "datamill export (internal_full)",
        "datamill_schema": "datamill export, JSON schema checked",
        "bare": "bare: read, parse, from_pylist, write_table",
        "bare_write": "bare: from_pylist, write_table",
    }
    for k, label in labels.items():
        b = r["best"][k]
        print(f"  {label:<46} {b['seconds']:>7.3f}s  {r['records_per_s'][k]:>10,.0f} records/s  "
              f"+{b['added_rss_mb']:.0f} MB RSS")  # fmt: skip
    print(f"  ratio datamill/bare: {r['ratio_datamill_vs_bare']:.3f}, datamill/bare write only: "
          f"{r['ratio_datamill_vs_bare_write']:.3f}, schema-checked/bare: {r['ratio_schema_vs_bare']:.3f} "
          "(time; lower is better)")  # fmt: skip
    write_json(args.json, r)
    return 0


def cmd_bench_templates(args: argparse.Namespace) -> int:
    from datamill.bench.template_bench import run_template_bench

    r = run_template_bench(args.size, args.repeat)
    print(f"templates bench: {r['size']:,} slots, 8 expression/template columns, best of {r['repeat']}")
    for label in ("datamill", "plain"):
        x = r[label]
        print(f"  {label:<9} {x['seconds']:>7.2f}s  {x['records_per_s']:>9,.0f} records/s")
    print(f"  ratio sandboxed/plain: {r['ratio']:.3f} (time; lower is better)")
    write_json(args.json, r)
    return 0


def cmd_bench_evalset(args: argparse.Namespace) -> int:
    from datamill.bench.evalset_bench import run_bench

    workers = tuple(int(w) for w in args.workers.split(","))
    for row in run_bench(args.size, args.latency_ms, workers, args.concurrency):
        print(orjson.dumps(row).decode())
    return 0


def cmd_bench_personas(args: argparse.Namespace) -> int:
    from datamill.bench.personas_bench import run_bench

    print(orjson.dumps(run_bench(args.size, args.workers)).decode())
    return 0


def cmd_bench_embedded(args: argparse.Namespace) -> int:
    from datamill.bench.llm_bench import print_embedded_bench, run_embedded_bench

    result = run_embedded_bench(args.n, args.max_tokens, args.threads)
    print_embedded_bench(result)
    write_json(args.json, result)
    return 0


def register(sub: Any) -> None:
    sp = sub.add_parser("bench", help="benchmarks against the bare floor", epilog="example: datamill bench lambda")
    bsub = sp.add_subparsers(dest="bench", required=True, parser_class=Parser)
    bp = bsub.add_parser(
        "lambda",
        epilog="example: datamill bench lambda --size 120000 --workers 2",
        help="lambda-traces records/s and peak RSS vs a bare generator loop",
    )
    bp.add_argument("--size", type=positive, default=20_000, help="slots (one trace each)")
    bp.add_argument("--workers", type=positive, default=os.cpu_count() or 1)
    bp.add_argument("--seed", type=non_negative, default=0)
    bp.add_argument("--keep", help="keep the datamill run dir here")
    bp.add_argument("--json", help="also write the result as JSON to this file")
    bp.set_defaults(fn=cmd_bench)
    fp = bsub.add_parser(
        "serve-fake",
        epilog="example: datamill bench serve-fake --latency-ms 200 --fault-rate 0.1 --port 8900",
        help="a fake OpenAI-compatible server (loopback) for tests and benchmarks",
    )
    fp.add_argument("--host", default="127.0.0.1")
    fp.add_argument("--port", type=non_negative, default=8900, help="0 picks a free port")
    fp.add_argument("--latency-ms", type=float, default=0.0)
    fp.add_argument("--fault-rate", type=float, default=0.0, help="share of requests that fail, over every kind")
    fp.add_argument("--timeout-sleep-s", type=float, default=5.0, help="how long a 'timeout' fault stalls")
    fp.add_argument("--seed", type=int, default=0)
    fp.add_argument("--echo-auth", action="store_true", help="echo the Authorization header in every body")
    fp.add_argument(
        "--reject-format", action="append", default=[], choices=["json_schema", "json_object"],
        help="refuse this response_format type (repeatable)",
    )  # fmt: skip
    fp.add_argument("--reject-status", type=int, default=400, choices=[400, 422, 500], help="status of a refusal")
    fp.add_argument("--reject-body", help="message of a refusal (default: one naming response_format)")
    fp.add_argument("--max-context", type=positive, help="answer 400 to prompts longer than this many words")
    fp.set_defaults(fn=cmd_serve_fake)
    lp = bsub.add_parser(
        "llm",
        epilog="example: datamill bench llm --n 1000 --concurrency 64 --latency-ms 200 --repeat 3",
        help="datamill vs raw aiohttp against the fake server, items/s ratio",
    )
    lp.add_argument("--n", type=positive, default=1000)
    lp.add_argument("--concurrency", type=positive, default=64)
    lp.add_argument("--latency-ms", type=float, default=200.0)
    lp.add_argument("--repeat", type=positive, default=1, help="alternate the two measurements this many times")
    lp.add_argument("--json", help="also write the result as JSON to this file")
    lp.set_defaults(fn=cmd_bench_llm)
    mp = bsub.add_parser(
        "map",
        help="a map over N rows against a bare aiohttp client over the same rows (fake server)",
        epilog="example: datamill bench map --rows 170000 --format parquet --workers 1,2 --latency-ms 200",
    )
    mp.add_argument("--rows", type=positive, default=10_000)
    mp.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl")
    mp.add_argument("--workers", default="1", help="comma-separated worker counts to measure (default 1)")
    mp.add_argument("--concurrency", type=positive, default=64)
    mp.add_argument("--latency-ms", type=float, default=200.0)
    mp.add_argument("--no-raw", action="store_true", help="skip the bare client")
    mp.add_argument("--json", help="write the result here")
    mp.set_defaults(fn=cmd_bench_map)
    pp = bsub.add_parser(
        "pack",
        help="prompt tokens and fallbacks of pack: k over rows sharing a long system prompt",
        epilog="examples:\n  datamill bench pack --rows 800 --k 1,4,8,16\n"
        "  datamill bench pack --embedded --rows 24 --k 1,4,8   # fallback rate on the embedded model",
    )
    pp.add_argument("--rows", type=positive, default=800)
    pp.add_argument("--k", default="1,4,8,16", help="comma-separated pack sizes")
    pp.add_argument("--embedded", action="store_true", help="the embedded model instead of the fake server")
    pp.add_argument("--json", help="write the result here")
    pp.set_defaults(fn=cmd_bench_pack)
    ep_ = bsub.add_parser(
        "eta",
        help="the ETA `datamill status` gives at 10%% of a map, against the actual end",
        epilog="example: datamill bench eta --rows 20000 --latency-ms 200",
    )
    ep_.add_argument("--rows", type=positive, default=20_000)
    ep_.add_argument("--latency-ms", type=float, default=200.0)
    ep_.add_argument("--concurrency", type=positive, default=64)
    ep_.add_argument("--json", help="write the result here")
    ep_.set_defaults(fn=cmd_bench_eta)
    vp = bsub.add_parser(
        "verify",
        epilog="example: datamill bench verify --n 1000",
        help="verify with token lengths vs bare tokenization of the same items",
    )
    vp.add_argument("--n", type=positive, default=2000)
    vp.add_argument("--tokens", type=positive, default=1500, help="mean tokens per item")
    vp.add_argument("--repeat", type=positive, default=3)
    vp.add_argument("--file", help="measure on this JSONL file instead of generated items")
    vp.add_argument("--gates", help="YAML file of gates verify evaluates too (dashboard and safety gates cost time)")
    vp.set_defaults(fn=cmd_bench_verify)
    vm = bsub.add_parser(
        "verify-memory",
        epilog="example: datamill bench verify-memory --shape text --sizes 1000000,10000000",
        help="peak RSS of verify as the dataset grows (flat in N)",
    )
    vm.add_argument("--sizes", default="100000,1000000", help="records per dataset, comma-separated")
    vm.add_argument("--shape", choices=["lambda", "text"], default="lambda", help="lambda-traces run or text JSONL")
    vm.add_argument("--tokens", action="store_true", help="count tokens too (slow on large text)")
    vm.add_argument("--dir", help="where to write the datasets (default: the temp dir); 10M records take ~7 GB")
    vm.add_argument("--keep", action="store_true", help="keep the datasets")
    vm.set_defaults(fn=cmd_bench_verify_memory)
    dp = bsub.add_parser(
        "dedup",
        epilog="example: datamill bench dedup --n 100000",
        help="MinHash dedup, staged and in memory, vs bare rensa and datasketch LSH passes",
    )
    dp.add_argument("--n", type=positive, default=100_000)
    dp.add_argument("--repeat", type=positive, default=1)
    dp.add_argument("--memory-mb", type=positive, default=512, help="the staged path's memory budget")
    dp.add_argument("--collapse", type=int, default=0, help="add a cluster of this many near-identical texts")
    dp.add_argument("--staged-only", action="store_true", help="only the staged path (sizes the others cannot hold)")
    dp.add_argument("--method", choices=("minhash", "semantic"), default="minhash",
                    help="semantic: the clustered path vs exact all-pairs (--staged-only: clustered only)")  # fmt: skip
    dp.set_defaults(fn=cmd_bench_dedup)
    rp = bsub.add_parser(
        "read",
        epilog="example: datamill bench read --size 120000 --repeat 5",
        help="what checking parts (size, content hash) costs a reader, vs unchecked and bare",
    )
    rp.add_argument("--size", type=positive, default=120_000, help="lambda-traces slots (~8 records each)")
    rp.add_argument("--repeat", type=positive, default=5)
    rp.add_argument("--json", help="also write the result as JSON to this file")
    rp.set_defaults(fn=cmd_bench_read)
    xp = bsub.add_parser(
        "export",
        epilog="example: datamill bench export --size 100000 --repeat 3",
        help="datamill export to Parquet vs bare pyarrow write_table of the same records",
    )
    xp.add_argument("--size", type=positive, default=100_000, help="records (one per slot)")
    xp.add_argument("--repeat", type=positive, default=3)
    xp.add_argument("--json", help="also write the result as JSON to this file")
    xp.set_defaults(fn=cmd_bench_export)
    tp = bsub.add_parser(
        "templates",
        epilog="example: datamill bench templates --size 100000",
        help="the template sandbox's cost: sandboxed vs plain Jinja2, same recipe",
    )
    tp.add_argument("--size", type=positive, default=100_000)
    tp.add_argument("--repeat", type=positive, default=3)
    tp.add_argument("--json", help="also write the result as JSON to this file")
    tp.set_defaults(fn=cmd_bench_templates)
    ep = bsub.add_parser(
        "embedded",
        epilog="example: datamill bench embedded --n 64 --max-tokens 64",
        help="the embedded backend vs bare llama-cpp-python on the same prompts",
    )
    ep.add_argument("--n", type=positive, default=16)
    ep.add_argument("--max-tokens", type=positive, default=64)
    ep.add_argument("--threads", type=positive, help="llama.cpp threads for both (default: the usable cores)")
    ep.add_argument("--json", help="also write the result as JSON to this file")
    ep.set_defaults(fn=cmd_bench_embedded)
    vsp = bsub.add_parser(
        "evalset",
        help="the evalset recipe end to end against a loopback planner/worker/judge",
        epilog="example: datamill bench evalset --size 500 --latency-ms 200 --workers 1,2",
    )
    vsp.add_argument("--size", type=int, default=500)
    vsp.add_argument("--latency-ms", type=float, default=200.0)
    vsp.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    vsp.add_argument("--concurrency", type=int, default=64)
    vsp.set_defaults(fn=cmd_bench_evalset)
    psp = bsub.add_parser(
        "personas",
        help="the personas recipe's procedural part (no LLM) against a bare loop",
        epilog="example: datamill bench personas --size 100000 --workers 2",
    )
    psp.add_argument("--size", type=int, default=100_000)
    psp.add_argument("--workers", type=int, default=2)
    psp.set_defaults(fn=cmd_bench_personas)
    rsp = bsub.add_parser(
        "ray",
        help="lambda-traces on the Ray executor vs the local one; limiter, cache and N-node contention",
        epilog="example: datamill bench ray --size 122000 --workers 1,2 --nodes 100",
    )
    rsp.add_argument("--size", type=positive, default=20_000, help="lambda-traces slots (about 8 records each)")
    rsp.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    rsp.add_argument("--repeat", type=positive, default=1, help="rounds (local and Ray alternate); the median is shown")
    rsp.add_argument(
        "--nodes", type=non_negative, default=100, help="simulated nodes committing into one dir (0: skip)"
    )
    rsp.add_argument("--json", help="also write the result as JSON to this file")
    rsp.set_defaults(fn=cmd_bench_ray)


def cmd_bench_ray(args: argparse.Namespace) -> int:
    from datamill.bench.ray_bench import run_ray_bench

    workers = [int(w) for w in args.workers.split(",")]
    r = run_ray_bench(args.size, workers, args.nodes, args.repeat)
    s = r["scaling"]
    print(f"lambda-traces: {s['slots']:,} slots, {r['cpus']} cpus; wall = the whole command, run = the run itself")
    for row in s["rows"]:
        print(f"  {row['executor']:<6} {row['workers']} workers  {row['records']:>10,} records  "
              f"wall {row['wall_s']:>7.2f}s {row['records_per_s_wall']:>9,}/s  "
              f"run {row['run_s']:>7.2f}s {row['records_per_s_run'] or 0:>9,}/s  cpu {row['cpu_s']:>7.2f}s  "
              f"(wall each round: "
              f"{', '.join(f'{x}s' for x in row['wall_samples'])})")  # fmt: skip
    for w, ratio in s["ray_over_local"].items():
        print(f"  ray/local at {w} workers: {ratio['wall']} (wall), {ratio['run']} (run), {ratio['cpu']} (cpu: "
              "records per CPU-second of the whole process tree); output identical")  # fmt: skip
    lim = r["limiter"]
    print(f"limiter: {lim['local_us_per_request']} us/request shared memory, {lim['ray_us_per_request']} us on the "
          f"Ray actor; actor ceiling {lim['actor_calls_per_s']:,} calls/s")  # fmt: skip
    c = r["cache"]
    print(f"cache: put/get {c['sqlite_put_us']}/{c['sqlite_get_us']} us SQLite, {c['journal_put_us']}/"
          f"{c['journal_get_us']} us journal; fold {c['fold_us_per_response']} us/response")  # fmt: skip
    if r["nodes"]:
        n = r["nodes"]
        for mode in ("journal", "sqlite"):
            m = n[mode]
            print(f"{n['nodes']} nodes, cache as {mode}: {m['parts_committed']} parts in {m['wall_s']}s, commit p50 "
                  f"{m['commit_ms_p50']} ms p99 {m['commit_ms_p99']} ms; {m['cache_puts_per_s']:,} cache puts/s, "
                  f"{m['cache_errors']} errors, worst put {m['cache_worst_put_ms']} ms")  # fmt: skip
    write_json(args.json, r)
    return 0
