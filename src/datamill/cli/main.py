"""``datamill <verb>``: argument parsing, progress display and exit codes.

Exit codes: 0 success; 1 a run that ended with failed slots, or data that breaks an invariant;
2 bad input (recipe, flag, file), with one error line and nothing written; 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import orjson
from ruamel.yaml import YAML

from datamill import __version__
from datamill.errors import DatamillError, RecipeError, UsageError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line and exits 2."""

    def error(self, message: str) -> NoReturn:
        where = "" if self.prog == "datamill" else f"{self.prog.split()[-1]}: "
        self.exit(2, f"datamill: error: {where}{message} (see --help)\n")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _param(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    if key.startswith("-"):
        raise argparse.ArgumentTypeError(f"unexpected argument {text!r}")
    try:
        value = YAML(typ="safe").load(raw)
    except Exception:
        value = raw
    return key.replace("-", "_"), value


def load_recipe(
    ref: str, size: int | None = None, seed: int | None = None, params: list[tuple[str, Any]] | None = None
):  # type: ignore[no-untyped-def]
    """A recipe file or a built-in name -> (loaded recipe with overrides, its text)."""
    from datamill.recipe import load_file
    from datamill.recipes import BUILTINS, builtin_path

    path = Path(ref)
    if not path.is_file():
        builtin = builtin_path(ref)
        if builtin is None:
            if ref.endswith((".yaml", ".yml")) or os.sep in ref:
                raise RecipeError(ref, 0, 0, "", "no such recipe file")
            raise UsageError(f"unknown recipe {ref!r}: not a file and not a built-in ({', '.join(BUILTINS)})")
        path = builtin
    loaded = load_file(path)
    loaded = loaded.with_overrides(size=size, seed=seed, params=dict(params or []))
    return loaded, path.read_text(encoding="utf-8")


def _progress(mode: str, label: str) -> Any:
    from datamill.cli.progress import PlainProgress, RichProgress
    from datamill.engine.progress import NullProgress

    if mode == "auto":
        mode = "rich" if sys.stderr.isatty() else "plain"
    if mode == "rich":
        return RichProgress(label)
    if mode == "plain":
        interval = float(os.environ.get("DATAMILL_PROGRESS_INTERVAL", "10"))
        return PlainProgress(label, interval=interval)
    return NullProgress()


def cmd_recipes(args: argparse.Namespace) -> int:
    from datamill.recipes import BUILTINS

    width = max(map(len, BUILTINS))
    for name, (_, about) in BUILTINS.items():
        print(f"{name:<{width}}  {about}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from datamill.engine import Plan

    loaded, _ = load_recipe(args.recipe, args.size, args.seed, args.param)
    if args.num_shards < 1:
        raise UsageError(f"--num-shards: expected an integer >= 1, got {args.num_shards}")
    r = loaded.recipe
    plan = Plan(r)
    print(f"recipe      {r.name} v{r.version} ({loaded.file})")
    print(f"hash        {loaded.hash}")
    print(f"seed        {r.seed}")
    print(f"slots       {plan.size:,}  (slot seed = f(recipe seed, slot index); part_size {plan.part_size:,})")
    if plan.cells:
        print("quotas      (largest remainder, exact)")
        for cell in plan.cells:
            label = ", ".join(f"{k}={v}" for k, v in cell.values.items())
            print(f"  {label:<40} {cell.count:>12,}")
    if plan.cycle_len:
        print(f"cycles      {plan.cycle_len} (slot i uses cycle i % {plan.cycle_len})")
        for c in range(plan.cycle_len):
            slots = len(range(c, plan.size, plan.cycle_len))
            values = ", ".join(f"{k}={v[c]}" for k, v in plan.cycles.items())
            print(f"  cycle {c:<3} {values:<40} {slots:>12,} slots")
    print(f"shards      {args.num_shards}")
    for s in range(args.num_shards):
        lo, hi = plan.shard_bounds(args.num_shards, s)
        n_ranges = len(range(lo // plan.part_size, (hi - 1) // plan.part_size + 1)) if hi > lo else 0
        print(f"  shard {s:<3} slots [{lo:,}, {hi:,})  {hi - lo:,} slots in {n_ranges:,} parts")
    _print_touches(loaded)
    return 0


def _print_touches(loaded: Any) -> None:
    from datamill.recipe.trust import describe, touches

    for line in describe(touches(loaded)):
        print(line)


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def cmd_run(args: argparse.Namespace) -> int:
    from datamill.engine import LocalExecutor, execute

    # A polite kill stops like Ctrl-C: workers end, the stop is logged, committed parts stay.
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)

    loaded, text = load_recipe(args.recipe, args.size, args.seed, args.param)
    if args.check:
        print(f"recipe {loaded.recipe.name} ({loaded.file}), hash {loaded.hash}: checks passed")
        _print_touches(loaded)
        return 0
    from datamill.engine.run import check_shards

    check_shards(args.num_shards, args.shard_index)
    label = (
        loaded.recipe.name
        if args.num_shards == 1
        else f"{loaded.recipe.name} [shard {args.shard_index}/{args.num_shards}]"
    )
    summary = execute(
        loaded,
        text,
        args.out,
        num_shards=args.num_shards,
        shard_index=args.shard_index,
        executor=LocalExecutor(args.workers),
        progress=_progress(args.progress, label),
        use_cache=not args.no_cache,
    )
    s = summary
    rate = s.new_records / s.seconds if s.seconds > 0 else 0.0
    print(
        f"{s.recipe}: {s.slots_done:,}/{s.slots_total:,} slots done, {s.slots_failed:,} failed, {s.records:,} records"
    )
    if s.dropped:
        total = sum(s.dropped.values())
        why = ", ".join(f"{k} {v:,}" for k, v in s.dropped.items())
        print(f"dropped: {total:,} slots ({why})")
    print(
        f"this invocation: {s.parts_run:,} parts run, {s.parts_resumed:,} already committed, "
        f"{s.new_records:,} records in {s.seconds:.1f}s ({rate:,.0f} records/s)"
    )
    for f in s.failed_examples:
        print(f"failed slot {f['slot']}: {f['reason']}")
    if s.slots_failed > len(s.failed_examples):
        print(
            f"... and {s.slots_failed - len(s.failed_examples):,} more failed slots "
            f"in {Path(args.out) / 'logs/run.jsonl'}"
        )
    if loaded.recipe.dedup is not None and s.stopped == "completed" and not s.slots_failed:
        _dedup_if_complete(Path(args.out), loaded.recipe.dedup)
    if s.stopped == "budget":
        print(f"stopped: {s.stop_detail}; committed parts are kept, re-run with a larger budget to resume")
    if s.crash_reason:
        # A native crash is never silent: one line on stderr, whatever else scrolled by.
        crash = s.crash_reason.split("model_crashed: ", 1)[-1]
        print(f"error: {crash} (failed slots: {s.slots_failed:,}; committed parts are kept)", file=sys.stderr)
    _print_telemetry(Path(args.out), write=True)
    print(f"out: {args.out}")
    return s.exit_code


def _print_telemetry(run_dir: Path, write: bool = False, full: bool = False) -> dict[str, Any] | None:
    """The LLM summary of a run dir (from logs/attempts.jsonl), printed; None without LLM attempts."""
    from datamill.llm.telemetry import read_attempts, summarize
    from datamill.store import atomic

    rows = list(read_attempts(run_dir / "logs" / "attempts.jsonl"))
    if not rows:
        return None
    t = summarize(rows)
    if write:
        atomic.write_bytes(run_dir / "reports" / "telemetry.json", orjson.dumps(t, option=orjson.OPT_INDENT_2))
    lat = t["latency_ms"]
    c = t["counts"]
    ips = "?" if t["items_per_s"] is None else f"{t['items_per_s']:,.1f}"

    def ms(v: float | None) -> str:
        return "?" if v is None else f"{v:,.0f}"

    print(
        f"llm: {t['attempts']:,} attempts, {c['success']:,} answered ({t['cache_hits']:,} from cache), "
        f"{c['retry']:,} retries, {c['failed']:,} failed; {ips} items/s; "
        f"latency p50/p95/p99 {ms(lat['p50'])}/{ms(lat['p95'])}/{ms(lat['p99'])} ms"
    )
    print(
        f"llm tokens: {t['prompt_tokens']:,} prompt sent ({t['prompt_tokens_unpacked']:,} unpacked), "
        f"{t['completion_tokens']:,} completion; cost ${t['cost_usd']:.4f}"
    )
    if t["repairs"] or full:
        print("llm repairs: " + (", ".join(f"{k} {v:,}" for k, v in t["repairs"].items()) or "none"))
    if t["failure_reasons"] or full:
        print("llm errors: " + (", ".join(f"{k} {v:,}" for k, v in t["failure_reasons"].items()) or "none"))
    if t["trimmed_prompts"]:
        print(f"llm trimmed prompts: {t['trimmed_prompts']:,}")
    for step in t["format_step_downs"]:
        print(
            f"llm structured output: {step['model']} refused response_format {step['from']}; "
            f"column {step['column']} and the rest of the run use {step['to']}"
        )
    flags = t["drift"]["flags"]
    if flags or full:
        print("llm drift: " + (", ".join(flags) or "none (first vs last window)"))
    return t


def _dedup_if_complete(out: Path, spec: Any) -> None:
    from datamill.engine import run_status
    from datamill.quality.dedup import dedup_run

    if run_status(out).summary.slots_remaining:
        print("dedup: waiting for the other shards (runs when every slot is done: `datamill dedup DIR`)")
        return
    res = dedup_run(out, spec.method, spec.threshold, spec.fields, spec.rounds)
    _print_dedup(res)


def _print_dedup(res: Any) -> None:
    rounds = ", ".join(f"round {r['round']}: {r['count']}" for r in res.rounds) or "none"
    print(f"dedup ({res.method}): rejected per round: {rounds}; left rejected: {len(res.left_rejected)}")


def cmd_dedup(args: argparse.Namespace) -> int:
    from datamill.quality.dedup import dedup_run
    from datamill.store import RunDir

    spec = RunDir(args.dir).manifest()["recipe"].get("dedup") or {}
    method = args.method or spec.get("method") or "exact"
    threshold = args.threshold if args.threshold is not None else spec.get("threshold")
    if threshold is not None and not 0 < threshold <= 1:
        raise UsageError(f"--threshold: expected a similarity in (0, 1], got {threshold}")
    res = dedup_run(args.dir, method, threshold, args.field or spec.get("fields"), args.rounds or spec.get("rounds", 3),
                    write=not args.dry_run, window=args.window)  # fmt: skip
    _print_dedup(res)
    return 0 if not res.left_rejected else 1


def cmd_golden_create(args: argparse.Namespace) -> int:
    from datamill.quality import golden

    loaded, _ = load_recipe(args.recipe, None, args.seed, args.param)
    stratify = [s.strip() for s in args.stratify.split(",") if s.strip()]
    if not stratify:
        raise UsageError("--stratify: expected one or more column names, comma-separated")
    doc = golden.create(loaded, args.size, stratify, args.out)
    print(
        f"golden set: {len(doc['slots']):,} slots over {len(doc['cells'])} cells of {', '.join(stratify)} -> {args.out}"
    )
    return 0


def cmd_golden_run(args: argparse.Namespace) -> int:
    import tempfile

    from datamill.quality import golden

    loaded, _ = load_recipe(args.recipe, None, args.seed, args.param)
    doc = golden.load(args.golden)
    tolerances = dict(golden.TOLERANCES)
    for item in args.tolerance or []:
        key, _, value = item.partition("=")
        try:
            tolerances[key] = float(value)
        except ValueError:
            raise UsageError(f"--tolerance: expected NAME=NUMBER, got {item!r}") from None
    with tempfile.TemporaryDirectory(prefix="datamill-golden-") as tmp:
        current = golden.measure(loaded, doc, Path(tmp))
    if args.out:
        atomic_out = Path(args.out)
        atomic_out.write_bytes(orjson.dumps(current, option=orjson.OPT_INDENT_2))
    if not args.baseline:
        print(
            f"golden run: {current['slots']} slots measured; no --baseline given"
            + (f", report: {args.out}" if args.out else "")
        )
        return 0
    try:
        baseline = orjson.loads(Path(args.baseline).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise UsageError(f"--baseline: {args.baseline}: {exc}") from None
    rows = golden.compare(current, baseline, tolerances)
    for r in rows:
        verdict = "PASS" if r["passed"] else "FAIL"
        tol = f"±{r['tolerance']:g}" if r["kind"] == "abs" else f"±{r['tolerance']:.0%}"
        print(f"{verdict} {r['metric']}: {r['current']} vs baseline {r['baseline']} ({tol})")
    failed = [r for r in rows if not r["passed"]]
    print(f"overall: {'FAIL' if failed else 'PASS'} ({len(rows) - len(failed)}/{len(rows)} metrics within tolerance)")
    return 1 if failed else 0


def cmd_extract(args: argparse.Namespace) -> int:
    if args.recipe != "contextual":
        raise UsageError(f"extract: only the contextual recipe has process targets, not {args.recipe!r}")
    from datamill.recipes.contextual.extract import extract

    n = extract(getattr(args, "in"), args.out, args.tokenizer)
    print(f"extracted {n:,} items -> {args.out}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from datamill.quality import load_gates, verify
    from datamill.store import RunDir, atomic

    target = Path(args.target)
    gates = []
    if target.is_dir():
        manifest = RunDir(target).manifest()
        from datamill.recipe.model import GateSpec

        gates = [GateSpec.model_validate(g) for g in manifest["recipe"].get("gates") or []]
    if args.gates:
        gates += load_gates(args.gates)
    params = {"integration_span_cap": args.integration_span_cap} if args.integration_span_cap else None
    report = verify(target, tokenizer=args.tokenizer, gates=gates, perf_budget_sec_per_100=args.perf_budget_sec_per_100,
                    count_tokens=not args.no_tokens, params=params, allow_partial=args.allow_partial)  # fmt: skip
    out = Path(args.report) if args.report else (target / "reports" / "verify.json" if target.is_dir() else None)
    if out is not None:
        if not out.parent.is_dir():
            raise UsageError(f"--report: {out.parent}: no such directory")
        atomic.write_bytes(out, orjson.dumps(report, option=orjson.OPT_INDENT_2))
    h, s = report["header"], report["summary"]
    print(f"verify {h['source']}: {h['num_items']:,} items, {s['time_per_100_items']:.3f} s per 100 items")
    for name, stats in s["fields"].items():
        tok = stats.get("tokens")
        tok_s = f"; tokens p10/p50/p90/max {tok['p10']}/{tok['p50']}/{tok['p90']}/{tok['max']}" if tok else ""
        c = stats["chars"]
        print(f"  {name}: chars p10/p50/p90/max {c['p10']}/{c['p50']}/{c['p90']}/{c['max']}{tok_s}")
    if s["duplicate_sample_id_count"]:
        shown = ", ".join(s["duplicate_sample_ids"][:5])
        print(f"FAIL duplicate_sample_ids: {s['duplicate_sample_id_count']:,} ({shown})")
    for g in s["gates"]:
        bound = " ".join(x for x in (f"min {g['min']:g}" if g["min"] is not None else "",
                                     f"max {g['max']:g}" if g["max"] is not None else "") if x)  # fmt: skip
        verdict = "PASS" if g["passed"] else ("FAIL" if g["severity"] == "fail" else "WARN")
        why = f": {g['reason']}" if g["reason"] else ""
        print(f"{verdict} {g['metric']} = {g['value']} ({bound}, {g['severity']}){why}")
    if out is not None:
        print(f"report: {out}")
    return 0 if s["passed"] else 1


def cmd_report(args: argparse.Namespace) -> int:
    from datamill.store import RunDir

    rd = RunDir(args.dir)
    rd.manifest()
    if args.telemetry:
        t = _print_telemetry(rd.path, write=True, full=True)
        if t is None:
            print(f"{args.dir}: no LLM attempts logged")
        elif args.json:
            print(orjson.dumps(t, option=orjson.OPT_INDENT_2).decode())
        return 0
    from datamill.quality.report import write_report

    path = write_report(rd.path, args.out)
    print(f"report: {path}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from datamill.cli.progress import fmt_duration
    from datamill.engine import run_status

    st = run_status(args.dir)
    if args.json:
        print(orjson.dumps(st.as_dict(), option=orjson.OPT_INDENT_2).decode())
        return 0
    s = st.summary
    pct = 100.0 * (s.slots_done + s.slots_failed) / s.slots_total if s.slots_total else 100.0
    print(f"recipe     {s.recipe} ({s.recipe_hash})")
    print(
        f"slots      {s.slots_done:,} done, {s.slots_failed:,} failed, "
        f"{s.slots_remaining:,} remaining of {s.slots_total:,} ({pct:.1f}%)"
    )
    print(f"records    {s.records:,} in {st.parts:,} parts")
    if s.dropped:
        print("dropped    " + ", ".join(f"{k} {v:,}" for k, v in s.dropped.items()))
    rate = "?" if st.records_per_s is None else f"{st.records_per_s:,.0f} records/s ({st.slots_per_s:,.1f} slots/s)"
    print(f"rate       {rate}")
    print(f"eta        {'done' if s.slots_remaining == 0 else fmt_duration(st.eta_s)}")
    print(f"running    {', '.join(st.running_shards) or 'no'}")
    if st.missing:
        print(
            "missing    "
            + ", ".join(f"[{a:,}, {b:,})" for a, b in st.missing[:5])
            + (" ..." if len(st.missing) > 5 else "")
        )
    for reason in st.damaged:
        print(f"damaged    {reason}")
    if st.last_stop:
        print(f"last stop  {st.last_stop}")
    return 0


def cmd_fsck(args: argparse.Namespace) -> int:
    from datamill.store import RunDir
    from datamill.store.integrity import fsck
    from datamill.store.reader import describe_gaps

    r = fsck(args.dir, repair=args.repair)
    for _, reason in r.damaged:
        print(reason)
    for meta in r.orphan_metas:
        print(f"{meta}: orphan meta (no part file: deleted, or left by a killed writer)")
    if r.missing:
        planned = int(RunDir(args.dir).manifest()["plan"]["slots"])
        print(f"{args.dir}: {describe_gaps(r.missing, planned)}")
    for q in r.quarantined:
        print(f"quarantined: {q}")
    print(
        f"fsck: {r.parts:,} parts checked, {len(r.damaged):,} damaged, {len(r.orphan_metas):,} orphan metas, "
        f"{sum(b - a for a, b in r.missing):,} slots without a part"
    )
    if r.clean:
        return 0
    if args.repair:
        print(f"repaired: `datamill run` on {args.dir} makes the quarantined ranges again (LLM answers from the cache)")
        return 0
    print(f"run `datamill fsck {args.dir} --repair` to quarantine them")
    return 1


def cmd_cat(args: argparse.Namespace) -> int:
    from datamill.store import write_in_order

    out = sys.stdout.buffer
    try:
        write_in_order(args.dir, out, allow_partial=args.allow_partial)
        out.flush()
    except BrokenPipeError:
        # `datamill cat DIR | head` is normal use: stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from datamill.store import merge

    stats = merge(args.dirs, args.out, allow_partial=args.allow_partial)
    print(
        f"merged {stats.records:,} records from {stats.parts:,} parts "
        f"({stats.slots_covered:,}/{stats.slots_planned:,} slots) into {args.out}"
    )
    return 0


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
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
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
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0


def cmd_bench_verify(args: argparse.Namespace) -> int:
    from datamill.bench.verify_bench import run_verify_bench

    r = run_verify_bench(args.n, args.tokens, args.repeat, args.file)
    print(f"verify bench: {r['n']:,} items of ~{r['mean_tokens']:,.0f} tokens in all (best of {args.repeat})")
    print(f"  datamill verify  {r['verify_s']:>7.3f}s  {r['verify_s_per_100']:.4f} s per 100 items")
    print(f"  bare tokenize    {r['bare_s']:>7.3f}s  {r['bare_s_per_100']:.4f} s per 100 items")
    print(f"  ratio verify/bare: {r['ratio']:.3f} (time; lower is better)")
    return 0


def cmd_bench_dedup(args: argparse.Namespace) -> int:
    from datamill.bench.dedup_bench import run_dedup_bench

    r = run_dedup_bench(args.n, args.repeat)
    b, d = r["bare"], r["datamill"]
    print(f"dedup bench: {r['n']:,} texts of ~100 words, MinHash 128 perms, threshold 0.8")
    print(f"  datamill  {d['seconds']:>7.2f}s  {d['rejected']:,} rejected  peak RSS {d['peak_rss_mb']:.0f} MB")
    print(f"  bare      {b['seconds']:>7.2f}s  {b['candidates']:,} candidates  peak RSS {b['peak_rss_mb']:.0f} MB")
    print(f"  ratio datamill/bare: {r['ratio']:.3f} (time; lower is better)")
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
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(r, option=orjson.OPT_INDENT_2))
    return 0


def cmd_bench_templates(args: argparse.Namespace) -> int:
    from datamill.bench.template_bench import run_template_bench

    r = run_template_bench(args.size, args.repeat)
    print(f"templates bench: {r['size']:,} slots, 8 expression/template columns, best of {r['repeat']}")
    for label in ("datamill", "plain"):
        x = r[label]
        print(f"  {label:<9} {x['seconds']:>7.2f}s  {x['records_per_s']:>9,.0f} records/s")
    print(f"  ratio sandboxed/plain: {r['ratio']:.3f} (time; lower is better)")
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(r, option=orjson.OPT_INDENT_2))
    return 0


def cmd_bench_embedded(args: argparse.Namespace) -> int:
    from datamill.bench.llm_bench import print_embedded_bench, run_embedded_bench

    result = run_embedded_bench(args.n, args.max_tokens, args.threads)
    print_embedded_bench(result)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from datamill.llm.doctor import run_doctor

    r = run_doctor()
    feats = r["cpu_features"]
    print(f"machine: {r['machine']}, {r['cores']} usable cores, Python {r['python']}")
    print("cpu: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in feats.items()))
    print(f"llama-cpp-python: {r['llama_cpp_version'] or '?'}, threads {r['threads'] or '?'}")
    print(f"llama.cpp build: {r['system_info'] or '?'}")
    g = r["generation"]
    if g is not None:
        print(
            f"generation: {g['completion_tokens']} tokens in {g['seconds']:.2f}s "
            f"({g['tokens_per_s']} tok/s): {g['text']!r}"
        )
    for risk in r["risks"]:
        print(f"warning: {risk}")
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(r, option=orjson.OPT_INDENT_2))
    if not r["ok"]:
        print(f"error: {r.get('error', 'no tokens generated')}", file=sys.stderr)
        if r["advice"]:
            print(f"what to do: {r['advice']}", file=sys.stderr)
        return 1
    print("ok: the embedded model runs on this machine")
    return 0


def cmd_probe_server(args: argparse.Namespace) -> int:
    from datamill.llm import probe

    key = None
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            raise UsageError(f"--api-key-env: environment variable {args.api_key_env} is not set")
    r = probe.probe_server(args.base_url, args.model, key, args.max_words)
    print(f"server {r['base_url']}, model {r['model']}")
    for name, cap in r["capabilities"].items():
        if not cap["ok"]:
            verdict = f"refused ({cap['error']})"
        elif "valid_json" in cap:
            verdict = "accepted, answer matches the schema" if cap["valid_json"] else "accepted, answer not valid"
        elif "reproducible" in cap:
            verdict = "accepted, same seed gives the same answer" if cap["reproducible"] else "accepted, not honoured"
        else:
            verdict = "accepted"
        print(f"  {name:<19} {verdict}")
    if "largest_context" in r:
        print(f"  largest prompt accepted: {r['largest_context']:,} tokens")
    print(f"structured output (structured: auto) will use: {r['ladder_uses']}")
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(r, option=orjson.OPT_INDENT_2))
    return 0 if r["capabilities"]["chat"]["ok"] else 1


def cmd_probe_context(args: argparse.Namespace) -> int:
    from datamill.llm import probe

    if args.base_url:
        if not args.model:
            raise UsageError("probe context: --base-url needs --model")
        key = None
        if args.api_key_env:
            key = os.environ.get(args.api_key_env)
            if not key:
                raise UsageError(f"--api-key-env: environment variable {args.api_key_env} is not set")
        result = probe.probe_served(args.base_url, args.model, key, args.max_words)
    else:
        try:
            sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
        except ValueError:
            raise UsageError(f"--sizes: expected comma-separated integers, got {args.sizes!r}") from None
        if not sizes or min(sizes) < 64:
            raise UsageError(f"--sizes: expected context sizes >= 64, got {args.sizes!r}")
        result = probe.probe_embedded(sizes)
    for row in result["sizes"]:
        size = f"n_ctx {row['n_ctx']:>6}" if "n_ctx" in row else f"words {row['words']:>6}"
        if row["ok"]:
            rss = f"  peak RSS {row['peak_rss_mb']:.0f} MB" if "peak_rss_mb" in row else ""
            print(f"  {size}  ok  prompt {row['prompt_tokens']:,} tokens{rss}")
        else:
            print(f"  {size}  refused: {row['error']}")
    mem = result["memory_per_context_token_kb"]
    print(f"memory per context token: {'n/a' if mem is None else f'{mem:.1f} KB'}")
    print(f"largest context that runs: {result['largest_context']:,} tokens")
    print(f"recommended limit (80%): {result['recommended_limit']:,} tokens (set model.context_limit)")
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="datamill", description="Synthetic datasets at any size, reproducibly.")
    p.add_argument("--version", action="version", version=f"datamill {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, parser_class=_Parser)

    def recipe_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("recipe", help="recipe YAML file or built-in name (see `datamill recipes`)")
        sp.add_argument("--size", type=_positive, help="number of slots (overrides the recipe)")
        sp.add_argument("--seed", type=_non_negative, help="recipe seed (overrides the recipe)")
        sp.add_argument(
            "--param", type=_param, action="append", metavar="KEY=VALUE", help="override a recipe parameter"
        )
        trust_args(sp)

    def trust_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--trust-code",
            action="store_true",
            help="allow code from outside the recipe's folder and installed packages",
        )
        sp.add_argument("--trust-host", action="append", default=[], metavar="HOST", help="allow sending a key to HOST")

    sp = sub.add_parser("recipes", help="list built-in recipes")
    sp.set_defaults(fn=cmd_recipes)

    sp = sub.add_parser("plan", help="print slots, quota allocation, cycles and shard ranges")
    recipe_args(sp)
    sp.add_argument("--num-shards", type=_positive, default=1)
    sp.set_defaults(fn=cmd_plan)

    sp = sub.add_parser("run", help="run (or resume) a recipe into a run dir")
    recipe_args(sp)
    sp.add_argument("--out", required=True, help="run dir (re-running resumes)")
    sp.add_argument(
        "--workers", type=_positive, default=os.cpu_count() or 1, help="worker processes (default: one per CPU)"
    )
    sp.add_argument("--num-shards", type=_positive, default=1)
    sp.add_argument("--shard-index", type=_non_negative, default=0)
    sp.add_argument("--progress", choices=["auto", "rich", "plain", "none"], default="auto")
    sp.add_argument("--no-cache", action="store_true", help="do not read or write the LLM response cache")
    sp.add_argument("--check", action="store_true", help="print what the recipe will touch, then exit")
    sp.set_defaults(fn=cmd_run)

    sp = sub.add_parser("status", help="done/remaining slots, records, rate and ETA of a run dir")
    sp.add_argument("dir")
    sp.add_argument("--json", action="store_true", help="print as JSON")
    sp.set_defaults(fn=cmd_status)

    sp = sub.add_parser(
        "cat",
        help="stream a run dir's records as JSONL in slot order (each part checked: size, hash)",
        epilog="example: datamill cat runs/lt | head",
    )
    sp.add_argument("dir")
    sp.add_argument("--allow-partial", action="store_true", help="stream even if slots have no part")
    sp.set_defaults(fn=cmd_cat)

    sp = sub.add_parser(
        "fsck",
        help="check every part and meta of a run dir; --repair quarantines damaged parts for the next run",
        epilog="example: datamill fsck runs/lt --repair && datamill run lambda-traces --out runs/lt",
    )
    sp.add_argument("dir")
    sp.add_argument("--repair", action="store_true", help="move damaged parts and orphan metas into RUN/quarantine/")
    sp.set_defaults(fn=cmd_fsck)

    sp = sub.add_parser("merge", help="concatenate shards in slot order into one JSONL file")
    sp.add_argument("dirs", nargs="+")
    sp.add_argument("--out", required=True)
    sp.add_argument("--allow-partial", action="store_true", help="merge even if slots have no part")
    sp.set_defaults(fn=cmd_merge)

    sp = sub.add_parser("verify", help="a quality report with gates on a run dir or a dataset file")
    sp.add_argument("target", help="run dir, or a .jsonl / .jsonl.zst / .parquet file")
    sp.add_argument("--report", help="where to write the JSON report (default: RUN/reports/verify.json)")
    sp.add_argument("--tokenizer", help="Hugging Face tokenizer.json or its directory (default ships in a package)")
    sp.add_argument("--gates", help="YAML file of gates (added to the recipe's gates)")
    sp.add_argument("--perf-budget-sec-per-100", type=float, help="warn when verify takes longer per 100 items")
    sp.add_argument("--no-tokens", action="store_true", help="skip token counts")
    sp.add_argument("--integration-span-cap", type=_positive, help="contextual items: the span cap to check")
    sp.add_argument("--allow-partial", action="store_true", help="verify a run dir even if slots have no part")
    sp.set_defaults(fn=cmd_verify)

    sp = sub.add_parser("dedup", help="order-independent dedup of a run dir, regenerating rejected slots")
    sp.add_argument("dir")
    sp.add_argument("--method", choices=["exact", "structural", "minhash", "semantic"])
    sp.add_argument("--threshold", type=float, help="minhash: Jaccard (default 0.8); semantic: cosine (default 0.9)")
    sp.add_argument("--field", action="append", help="field(s) to compare (default: every string field but ids)")
    sp.add_argument("--rounds", type=_positive, help="regeneration rounds (default 3)")
    sp.add_argument("--dry-run", action="store_true", help="report, rewrite nothing")
    sp.add_argument(
        "--window", type=_positive, help="streaming mode: compare each record with the N before it (order-dependent)"
    )
    sp.set_defaults(fn=cmd_dedup)

    sp = sub.add_parser("extract", help="process targets of a recipe's items (contextual: span offsets)")
    sp.add_argument("recipe", help="contextual")
    sp.add_argument("--in", required=True, help="run dir or JSONL file of the recipe's items")
    sp.add_argument("--out", required=True, help="JSONL file to write")
    sp.add_argument("--tokenizer", help="Hugging Face tokenizer.json or its directory (default ships in a package)")
    sp.set_defaults(fn=cmd_extract)

    sp = sub.add_parser("golden", help="golden sets: fixed balanced slots, regenerated and compared")
    gsub = sp.add_subparsers(dest="golden", required=True, parser_class=_Parser)
    gc = gsub.add_parser("create", help="pick a fixed, balanced set of slots")
    gc.add_argument("recipe")
    gc.add_argument("--size", type=_positive, default=200)
    gc.add_argument("--stratify", required=True, help="columns to balance over, comma-separated")
    gc.add_argument("--out", default="golden.json")
    gc.add_argument("--seed", type=_non_negative)
    gc.add_argument("--param", type=_param, action="append", metavar="KEY=VALUE")
    trust_args(gc)
    gc.set_defaults(fn=cmd_golden_create)
    gr = gsub.add_parser("run", help="regenerate the golden slots and compare with a baseline")
    gr.add_argument("recipe")
    gr.add_argument("--golden", required=True)
    gr.add_argument("--baseline", help="a report written by an earlier `golden run --out`")
    gr.add_argument("--out", help="write this run's metrics here (a baseline for later runs)")
    gr.add_argument("--tolerance", action="append", metavar="NAME=VALUE", help="absolute tolerance for a metric")
    gr.add_argument("--seed", type=_non_negative)
    gr.add_argument("--param", type=_param, action="append", metavar="KEY=VALUE")
    trust_args(gr)
    gr.set_defaults(fn=cmd_golden_run)

    sp = sub.add_parser(
        "doctor",
        help="check the embedded model on this machine: CPU features, llama.cpp build, one generation",
        epilog="example: datamill doctor --json doctor.json",
    )
    sp.add_argument("--json", help="also write the result as JSON to this file")
    sp.set_defaults(fn=cmd_doctor)

    sp = sub.add_parser("probe", help="measure a model's limits")
    psub = sp.add_subparsers(dest="probe", required=True, parser_class=_Parser)
    cp = psub.add_parser("context", help="memory per context token, largest context, safe limit (80%%)")
    cp.add_argument("--sizes", default="512,1024,2048,4096,8192", help="embedded: context sizes to try")
    cp.add_argument("--base-url", help="probe an OpenAI-compatible server instead of the embedded model")
    cp.add_argument("--model", help="the served model's name (with --base-url)")
    cp.add_argument("--api-key-env", help="environment variable holding the server's key")
    cp.add_argument("--max-words", type=_positive, default=65_536, help="served: longest prompt to try")
    cp.add_argument("--json", help="also write the result as JSON to this file")
    cp.set_defaults(fn=cmd_probe_context)
    sv = psub.add_parser(
        "server",
        help="what an OpenAI-compatible server accepts: response formats, seed, list content, context",
        epilog="example: datamill probe server --base-url http://127.0.0.1:8000/v1 --model smollm2",
    )
    sv.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/v1")
    sv.add_argument("--model", required=True, help="the served model's name")
    sv.add_argument("--api-key-env", help="environment variable holding the server's key")
    sv.add_argument("--max-words", type=_non_negative, default=0, help="also find the largest prompt (0: skip)")
    sv.add_argument("--json", help="also write the result as JSON to this file")
    sv.set_defaults(fn=cmd_probe_server)

    sp = sub.add_parser("report", help="the HTML report of a run dir (or --telemetry: the LLM summary)")
    sp.add_argument("dir")
    sp.add_argument("--telemetry", action="store_true", help="the LLM telemetry summary and drift flags")
    sp.add_argument("--json", action="store_true", help="also print the summary as JSON")
    sp.add_argument("--out", help="where to write the HTML report (default: RUN/reports/report.html)")
    sp.set_defaults(fn=cmd_report)

    sp = sub.add_parser("bench", help="benchmarks against the bare floor")
    bsub = sp.add_subparsers(dest="bench", required=True, parser_class=_Parser)
    bp = bsub.add_parser("lambda", help="lambda-traces records/s and peak RSS vs a bare generator loop")
    bp.add_argument("--size", type=_positive, default=20_000, help="slots (one trace each)")
    bp.add_argument("--workers", type=_positive, default=os.cpu_count() or 1)
    bp.add_argument("--seed", type=_non_negative, default=0)
    bp.add_argument("--keep", help="keep the datamill run dir here")
    bp.add_argument("--json", help="also write the result as JSON to this file")
    bp.set_defaults(fn=cmd_bench)
    fp = bsub.add_parser("serve-fake", help="a fake OpenAI-compatible server (loopback) for tests and benchmarks")
    fp.add_argument("--host", default="127.0.0.1")
    fp.add_argument("--port", type=_non_negative, default=8900, help="0 picks a free port")
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
    fp.add_argument("--max-context", type=_positive, help="answer 400 to prompts longer than this many words")
    fp.set_defaults(fn=cmd_serve_fake)
    lp = bsub.add_parser("llm", help="datamill vs raw aiohttp against the fake server, items/s ratio")
    lp.add_argument("--n", type=_positive, default=1000)
    lp.add_argument("--concurrency", type=_positive, default=64)
    lp.add_argument("--latency-ms", type=float, default=200.0)
    lp.add_argument("--repeat", type=_positive, default=1, help="alternate the two measurements this many times")
    lp.add_argument("--json", help="also write the result as JSON to this file")
    lp.set_defaults(fn=cmd_bench_llm)
    vp = bsub.add_parser("verify", help="verify with token lengths vs bare tokenization of the same items")
    vp.add_argument("--n", type=_positive, default=2000)
    vp.add_argument("--tokens", type=_positive, default=1500, help="mean tokens per item")
    vp.add_argument("--repeat", type=_positive, default=3)
    vp.add_argument("--file", help="measure on this JSONL file instead of generated items")
    vp.set_defaults(fn=cmd_bench_verify)
    dp = bsub.add_parser("dedup", help="MinHash near-dup detection vs a bare rensa LSH pass")
    dp.add_argument("--n", type=_positive, default=100_000)
    dp.add_argument("--repeat", type=_positive, default=1)
    dp.set_defaults(fn=cmd_bench_dedup)
    rp = bsub.add_parser("read", help="what checking parts (size, content hash) costs a reader, vs unchecked and bare")
    rp.add_argument("--size", type=_positive, default=120_000, help="lambda-traces slots (~8 records each)")
    rp.add_argument("--repeat", type=_positive, default=5)
    rp.add_argument("--json", help="also write the result as JSON to this file")
    rp.set_defaults(fn=cmd_bench_read)
    tp = bsub.add_parser("templates", help="the template sandbox's cost: sandboxed vs plain Jinja2, same recipe")
    tp.add_argument("--size", type=_positive, default=100_000)
    tp.add_argument("--repeat", type=_positive, default=3)
    tp.add_argument("--json", help="also write the result as JSON to this file")
    tp.set_defaults(fn=cmd_bench_templates)
    ep = bsub.add_parser("embedded", help="the embedded backend vs bare llama-cpp-python on the same prompts")
    ep.add_argument("--n", type=_positive, default=16)
    ep.add_argument("--max-tokens", type=_positive, default=64)
    ep.add_argument("--threads", type=_positive, help="llama.cpp threads for both (default: the usable cores)")
    ep.add_argument("--json", help="also write the result as JSON to this file")
    ep.set_defaults(fn=cmd_bench_embedded)
    return p


def _param_flags(extra: list[str]) -> list[tuple[str, Any]]:
    """``--integration-span-cap 3 --disable-long-context`` -> recipe parameters (checked later)."""
    out: list[tuple[str, Any]] = []
    i = 0
    while i < len(extra):
        flag = extra[i]
        if not flag.startswith("--") or len(flag) < 3:
            raise UsageError(f"unexpected argument {flag!r} (see --help)")
        name, eq, value = flag[2:].partition("=")
        if not eq:
            if i + 1 < len(extra) and not extra[i + 1].startswith("--"):
                value = extra[i + 1]
                i += 1
            else:
                value = "true"  # a bare flag switches a boolean parameter on
        out.append(_param(f"{name}={value}"))
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if getattr(args, "verb", None) not in ("run", "plan") or not hasattr(args, "param"):
            parser.parse_args(argv)  # reports the unknown argument in argparse's words, exit 2
        try:
            args.param = (args.param or []) + _param_flags(extra)
        except DatamillError as exc:
            print(f"datamill: error: {exc}", file=sys.stderr)
            return exc.exit_code
    try:
        _apply_trust(args)
        return int(args.fn(args))
    except RecipeError as exc:
        print(str(exc), file=sys.stderr)  # FILE:LINE:COL: field.path: message, like a compiler
        return exc.exit_code
    except DatamillError as exc:
        print(f"datamill: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("datamill: interrupted; committed parts are kept, re-run the same command to resume", file=sys.stderr)
        return 130


def _apply_trust(args: argparse.Namespace) -> None:
    """The config file's trust entry, widened by this command's --trust-code / --trust-host."""
    from datamill.recipe import trust

    policy = trust.load_config()
    policy.code = policy.code or bool(getattr(args, "trust_code", False))
    policy.hosts |= {h.lower() for h in getattr(args, "trust_host", None) or []}
    trust.set_policy(policy)


def entry() -> NoReturn:
    sys.exit(main())
