"""Verbs that make and read run dirs: recipes, plan, run, status, cat, merge, fsck."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

from datamill import api
from datamill.cli.common import non_negative, positive, recipe_args
from datamill.errors import UsageError
from datamill.progress import fmt_duration


def cmd_recipes(args: argparse.Namespace) -> int:
    recipes = api.builtin_recipes()
    width = max(map(len, recipes))
    for name, about in recipes.items():
        print(f"{name:<{width}}  {about}")
    return 0


def _recipe(args: argparse.Namespace) -> api.Recipe:
    return api.load_recipe(
        args.recipe,
        size=args.size,
        seed=args.seed,
        params=dict(args.param or []),
        on_bad_row=getattr(args, "on_bad_row", None),
    )


def print_saved_plan(run_dir: str) -> int:
    """``datamill plan RUN``: the plan a planner recipe's run dir was made with."""
    saved = api.saved_plan(run_dir)
    if saved is None:
        raise UsageError(f"{run_dir}: no saved plan (plan.json): not a run dir of a recipe with a planner")
    cats = saved["categories"]
    print(f"plan of {run_dir}: {sum(c['count'] for c in cats):,} cases in {len(cats)} categories")
    for c in cats:
        print(f"  {c['name']:<28} {c['count']:>8,}  {c['description']}")
        for x in c["example_inputs"]:
            print(f"      e.g. {x}")
        for x in c["expectations"]:
            print(f"      expects: {x}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    if Path(args.recipe).is_dir():
        return print_saved_plan(args.recipe)
    info = api.plan(_recipe(args), args.num_shards, plan_file=args.plan)
    r, plan = info.recipe.model, info.plan
    print(f"recipe      {r.name} v{r.version} ({info.recipe.loaded.file})")
    print(f"hash        {info.recipe.hash}")
    print(f"seed        {r.seed}")
    print(f"slots       {plan.size:,}  (slot seed = f(recipe seed, slot index); part_size {plan.part_size:,})")
    if plan.cells:
        print("quotas      (largest remainder, exact)")
        for cell in plan.cells:
            label = plan.label(cell.values)
            print(f"  {label:<40} {cell.count:>12,}")
    if plan.categories:
        print("categories  (the plan's exact counts, one block of slots each)")
        for c in plan.categories:
            print(f"  {c['name']:<40} {c['count']:>12,}")
    elif r.planner is not None:
        print("categories  decided by the planner when the run starts (or give --plan FILE)")
    if plan.cycle_len:
        print(f"cycles      {plan.cycle_len} (slot i uses cycle i % {plan.cycle_len})")
        for c in range(plan.cycle_len):
            slots = len(range(c, plan.size, plan.cycle_len))
            values = ", ".join(f"{k}={v[c]}" for k, v in plan.cycles.items())
            print(f"  cycle {c:<3} {values:<40} {slots:>12,} slots")
    print(f"shards      {info.num_shards}")
    for s in info.shards:
        lo, hi = s["start"], s["end"]
        print(f"  shard {s['index']:<3} slots [{lo:,}, {hi:,})  {hi - lo:,} slots in {s['parts']:,} parts")
    print_touches(info.recipe)
    return 0


def print_touches(recipe: api.Recipe) -> None:
    t = api.touches(recipe)
    print("touches:")
    print("  code:" + ("" if t["code"] else " none"))
    for c in t["code"]:
        print(f"    {c['ref']} -> {c['path'] or '(built-in)'} [{c['origin']}]")
    print("  files read:" + ("" if t["files"] else " none"))
    for f in t["files"]:
        print(f"    {f['path']} ({f['why']})")
    print("  hosts:" + ("" if t["hosts"] else " none"))
    for h in t["hosts"]:
        key = f" with ${h['key_env']}" if h["key_env"] else ""
        print(f"    {h['host']} ({h['base_url']}) [{h['class']}]{key}")
    print("  environment variables:" + ("" if t["env"] else " none"))
    for e in t["env"]:
        print(f"    {e['name']} ({e['why']})")


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def cmd_run(args: argparse.Namespace) -> int:
    # A polite kill stops like Ctrl-C: workers end, the stop is logged, committed parts stay.
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    recipe = _recipe(args)
    if args.check:
        print(f"recipe {recipe.name} ({recipe.loaded.file}), hash {recipe.hash}: checks passed")
        print_touches(recipe)
        return 0
    result = api.run(
        recipe,
        args.out,
        workers=args.workers,
        num_shards=args.num_shards,
        shard_index=args.shard_index,
        executor=args.executor,
        address=args.address,
        progress=args.progress,
        use_cache=not args.no_cache,
        retry_failed=args.retry_failed,
        plan=args.plan,
    )
    return print_result(result, args.out)


def print_result(result: api.RunResult, out: str) -> int:
    """What a run did, as lines; returns its exit code."""
    s = result.summary
    rate = s.new_records / s.seconds if s.seconds > 0 else 0.0
    print(
        f"{s.recipe}: {s.slots_done:,}/{s.slots_total:,} slots done, {s.slots_failed:,} failed, {s.records:,} records"
    )
    if s.dropped:
        total = sum(s.dropped.values())
        why = ", ".join(f"{k} {v:,}" for k, v in s.dropped.items())
        print(f"dropped: {total:,} slots ({why})")
    if s.retried_slots:
        print(f"retried: {s.retried_slots:,} failed slots run again ({s.slots_failed:,} still failed)")
    print(
        f"this invocation: {s.parts_run:,} parts run, {s.parts_resumed:,} already committed, "
        f"{s.new_records:,} records in {s.seconds:.1f}s ({rate:,.0f} records/s); "
        f"executor {s.executor}, {s.workers} worker{'s' if s.workers != 1 else ''}"
    )
    for f in result.failures:
        print(f"failed slot {f['slot']}: {f['reason']}")
    if s.slots_failed > len(result.failures):
        print(f"... and {s.slots_failed - len(result.failures):,} more failed slots in {Path(out) / 'logs/run.jsonl'}")
    if result.dedup_waiting:
        print("dedup: waiting for the other shards (runs when every slot is done: `datamill dedup DIR`)")
    if result.dedup is not None:
        print_dedup(result.dedup)
    if s.stopped == "budget":
        print(f"stopped: {s.stop_detail}; committed parts are kept, re-run with a larger budget to resume")
    if s.crash_reason:
        # A native crash is never silent: one line on stderr, whatever else scrolled by.
        crash = s.crash_reason.split("model_crashed: ", 1)[-1]
        print(f"error: {crash} (failed slots: {s.slots_failed:,}; committed parts are kept)", file=sys.stderr)
    if result.telemetry is not None:
        print_telemetry(result.telemetry)
    print(f"out: {out}")
    return result.exit_code


def cmd_map(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    model: dict[str, Any] = {}
    if args.model_base_url:
        model = {"backend": "openai", "base_url": args.model_base_url, "model": args.model or "default"}
        if args.api_key_env:
            model["api_key_env"] = args.api_key_env
    elif args.model:
        model = {"model": args.model}  # a GGUF file for the embedded backend
    for flag, name in (("concurrency", "concurrency"), ("rpm", "rpm"), ("tpm", "tpm"), ("timeout", "timeout_s"),
                       ("max_retries", "max_retries")):  # fmt: skip
        if getattr(args, flag) is not None:
            model[name] = getattr(args, flag)
    result = api.map(
        args.input,
        args.prompt,
        args.column,
        args.out,
        key=args.key,
        format=args.format,
        schema=args.schema,
        system=args.system,
        model=model or None,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        pack=args.pack,
        part_size=args.part_size,
        size=args.size,
        seed=args.seed,
        on_bad_row=args.on_bad_row,
        workers=args.workers,
        progress=args.progress,
        retry_failed=args.retry_failed,
    )
    return print_result(result, args.out)


def print_dedup(res: Any) -> None:
    rounds = ", ".join(f"round {r['round']}: {r['count']}" for r in res.rounds if r["round"] != "left") or "none"
    print(f"dedup ({res.method}): rejected per round: {rounds}; left rejected: {len(res.left_rejected)}")
    if res.by:
        per: dict[str, int] = {}
        for r in res.rounds:
            if r["round"] != "left":
                for k, v in r.get("by", {}).items():
                    per[k] = per.get(k, 0) + v
        print(f"dedup rejections by {res.by}: " + (", ".join(f"{k} {v:,}" for k, v in per.items()) or "none"))
    for f in res.failed[:5]:
        print(f"failed slot {f['slot']}: {f['reason']}")


def print_telemetry(t: dict[str, Any], full: bool = False) -> None:
    """The LLM summary of a run (``api.telemetry``), as lines."""
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
    if len(t.get("by_model", {})) > 1 or full:
        for name, b in t.get("by_model", {}).items():
            print(f"llm model {name}: {b['attempts']:,} attempts, {b['answered']:,} answered, {b['cached']:,} cached, "
                  f"{b['prompt_tokens']:,}+{b['completion_tokens']:,} tokens, ${b['cost_usd']:.4f}")  # fmt: skip
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


def cmd_status(args: argparse.Namespace) -> int:
    st = api.status(args.dir)
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
    if st.executor:
        print(f"executor   {st.executor} (latest invocation)")
    if st.missing:
        shown = ", ".join(f"[{a:,}, {b:,})" for a, b in st.missing[:5])
        print("missing    " + shown + (" ..." if len(st.missing) > 5 else ""))
    for reason in st.damaged:
        print(f"damaged    {reason}")
    if st.failure_reasons:
        print("failures   " + ", ".join(f"{k} {v:,}" for k, v in st.failure_reasons.items()))
        print("           (`datamill run ... --retry-failed` runs them again)")
    if st.llm:
        m = st.llm
        print(f"llm        {m['requests']:,} requests ({m['cached']:,} from cache), {m['prompt_tokens']:,} prompt + "
              f"{m['completion_tokens']:,} completion tokens, ${m['cost_usd']:,.4f}")  # fmt: skip
    if st.estimate:
        e = st.estimate
        print(f"estimate   {e['requests']:,} requests, {e['prompt_tokens']:,} prompt tokens, cost at most "
              f"${e['cost_usd_max']:,.4f}, time ~{fmt_duration(e['seconds'])}  (actual so far: see llm)")  # fmt: skip
    if st.last_stop:
        print(f"last stop  {st.last_stop}")
    if args.compare:
        c = api.compare_tiers(args.compare, args.dir)

        def show(w: dict[str, Any]) -> str:
            def pct(v: float | None) -> str:
                return "?" if v is None else f"{100 * v:.1f}%"

            lat = "?" if w["latency_p50_ms"] is None else f"{w['latency_p50_ms']:,.0f} ms"
            return f"success {pct(w['success_rate'])}, repairs {pct(w['repair_rate'])}, latency p50 {lat}"

        print(f"tier       {args.compare}: {show(c['base'])}")
        print(f"           this run: {show(c['tier'])}")
        print(f"drift      {', '.join(c['flags']) or 'none'}")
        return 1 if c["flags"] else 0
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    est = api.estimate(_recipe(args), sample=args.sample, sample_calls=args.sample_calls, out=args.out)
    d = est.as_dict()
    if args.json:
        print(orjson.dumps(d, option=orjson.OPT_INDENT_2).decode())
        return 0
    sent = f"{args.sample_calls} sample calls sent" if args.sample_calls else "nothing sent"
    print(f"estimate of {d['recipe']}: {d['slots']:,} slots, prompts rendered for {d['sample']:,} ({sent})")
    for c in d["columns"]:
        done = "?" if c["completion_tokens"] is None else f"~{c['completion_tokens']:,}"
        cost = "" if c["cost_usd"] is None else f"~${c['cost_usd']:,.4f}, "
        print(f"  {c['column']} ({c['model']}): {c['requests']:,} requests, {c['prompt_tokens']:,} prompt tokens "
              f"[{c['tokenizer']}], completion tokens {done} (at most {c['completion_tokens_max']:,})")  # fmt: skip
        print(f"    cost {cost}at most ${c['cost_usd_max']:,.4f}; time ~{fmt_duration(c['seconds'])} "
              f"(latency {c['latency_s'] * 1000:,.0f} ms, {c['latency_from']})")  # fmt: skip
    print(f"total: {d['requests']:,} requests, {d['prompt_tokens']:,} prompt tokens, cost at most "
          f"${d['cost_usd_max']:,.4f}, time ~{fmt_duration(d['seconds'])}")  # fmt: skip
    for note in d["notes"]:
        print(f"note: {note}")
    if args.out:
        print(f"kept in {Path(args.out) / 'reports' / 'estimate.json'} (`datamill status` shows it beside the actual)")
    return 0


def cmd_cat(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    try:
        api.cat(args.dir, out, allow_partial=args.allow_partial)
        out.flush()
    except BrokenPipeError:
        # `datamill cat DIR | head` is normal use: stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    stats = api.merge(args.dirs, args.out, allow_partial=args.allow_partial)
    print(
        f"merged {stats.records:,} records from {stats.parts:,} parts "
        f"({stats.slots_covered:,}/{stats.slots_planned:,} slots) into {args.out}"
    )
    return 0


def cmd_fsck(args: argparse.Namespace) -> int:
    r = api.fsck(args.dir, repair=args.repair)
    for _, reason in r.damaged:
        print(reason)
    for meta in r.orphan_metas:
        print(f"{meta}: orphan meta (no part file: deleted, or left by a killed writer)")
    if r.missing:
        print(f"{args.dir}: {api.describe_gaps(r.missing, r.planned)}")
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


def register(sub: Any) -> None:
    sp = sub.add_parser("recipes", help="list built-in recipes", epilog="example: datamill recipes")
    sp.set_defaults(fn=cmd_recipes)

    sp = sub.add_parser(
        "plan",
        help="print slots, quota allocation, cycles, shard ranges and what the recipe touches",
        epilog="example: datamill plan lambda-traces --size 100000 --num-shards 4",
    )
    recipe_args(sp)
    sp.add_argument("--num-shards", type=positive, default=1)
    sp.add_argument("--plan", help="a planner recipe's plan file (YAML/JSON) or built-in plan name")
    sp.set_defaults(fn=cmd_plan)

    sp = sub.add_parser(
        "run",
        help="run (or resume) a recipe into a run dir",
        epilog="examples:\n  datamill run lambda-traces --size 100000 --out runs/lt --workers 2\n"
        "  datamill run recipe.yaml --out runs/x --check     # what it will touch, nothing run\n"
        "  datamill run lambda-traces --out /shared/lt --executor ray --address HEAD:6379   # on a Ray cluster",
    )
    recipe_args(sp)
    sp.add_argument("--out", required=True, help="run dir (re-running resumes)")
    sp.add_argument(
        "--plan",
        help="a planner recipe's plan (YAML/JSON file, or a built-in plan: customer-service) instead of asking "
        "the planner model; its counts set the size",
    )
    sp.add_argument(
        "--workers",
        type=positive,
        default=None,
        help="worker processes (default: one per CPU); with --executor ray, Ray tasks at a time "
        "(default: the cluster's CPUs)",
    )
    sp.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="local: a process pool on this machine; ray: Ray tasks (pip install 'datamill[ray]'), "
        "same output, either resumes the other's run",
    )
    sp.add_argument(
        "--address",
        help="with --executor ray: the cluster to join (HEAD_IP:6379); without it a local Ray instance "
        "is started for the run and stopped after",
    )
    sp.add_argument("--num-shards", type=positive, default=1)
    sp.add_argument("--shard-index", type=non_negative, default=0)
    sp.add_argument("--progress", choices=["auto", "rich", "plain", "none"], default="auto")
    sp.add_argument("--no-cache", action="store_true", help="do not read or write the LLM response cache")
    sp.add_argument("--check", action="store_true", help="print what the recipe will touch, then exit")
    sp.add_argument(
        "--retry-failed", action="store_true", help="run again the slots that ended failed in committed parts"
    )
    sp.add_argument(
        "--on-bad-row",
        choices=["error", "skip"],
        help="a source row that cannot be read: error (exit 2, nothing written; the default) or skip "
        "(its slot fails with the reason, the rest runs)",
    )
    sp.set_defaults(fn=cmd_run)

    sp = sub.add_parser(
        "map",
        help="ask a model about every row of a file: the rows come back with the answer in a new column",
        epilog="examples:\n  datamill map rows.jsonl --prompt 'Score {{ text }} from 1 to 10' --column score "
        "--out runs/scores\n  datamill map rows.parquet --key id --prompt 'Summarise: {{ text }}' --column summary "
        "--model-base-url http://127.0.0.1:8000/v1 --model qwen --out runs/sum\n"
        "re-running the same command resumes; the recipe it ran is kept as OUT/map.yaml",
    )
    sp.add_argument("input", help="a JSONL, CSV or Parquet file, or a dataset folder (datasets.save_to_disk)")
    sp.add_argument("--prompt", required=True, help="Jinja2 template over the row's columns")
    sp.add_argument("--column", required=True, help="name of the new column")
    sp.add_argument("--out", required=True, help="run dir (re-running resumes)")
    sp.add_argument("--key", help="input column whose value becomes each record's sample_id")
    sp.add_argument("--format", choices=["auto", "jsonl", "csv", "parquet", "hf"], default="auto")
    sp.add_argument("--schema", help="JSON schema file: the answer is JSON matching it")
    sp.add_argument("--system", help="system prompt (Jinja2)")
    sp.add_argument("--model-base-url", help="an OpenAI-compatible server (default: the embedded model)")
    sp.add_argument("--model", help="served model name (with --model-base-url) or a GGUF file (embedded)")
    sp.add_argument("--api-key-env", help="environment variable holding the server's API key")
    sp.add_argument("--concurrency", type=positive, help="requests in flight, run-wide (default 16)")
    sp.add_argument("--rpm", type=positive, help="requests per minute, run-wide")
    sp.add_argument("--tpm", type=positive, help="tokens per minute, run-wide")
    sp.add_argument("--timeout", type=float, help="seconds per request (default 60)")
    sp.add_argument("--max-retries", type=non_negative, help="retries of a failed request (default 5; 429s always)")
    sp.add_argument("--max-tokens", type=positive)
    sp.add_argument("--temperature", type=float)
    sp.add_argument("--pack", type=positive, help="rows per request (one shared system prompt)")
    sp.add_argument("--part-size", type=positive, help="rows per committed part (default 1000)")
    sp.add_argument("--size", type=positive, help="map only the first N rows")
    sp.add_argument("--seed", type=non_negative, default=0)
    sp.add_argument("--workers", type=positive, default=1, help="worker processes (default 1: requests are async)")
    sp.add_argument("--on-bad-row", choices=["error", "skip"], help="see `datamill run --help`")
    sp.add_argument("--progress", choices=["auto", "rich", "plain", "none"], default="auto")
    sp.add_argument("--retry-failed", action="store_true", help="run again the rows that ended failed")
    sp.set_defaults(fn=cmd_map)

    sp = sub.add_parser(
        "estimate",
        help="requests, tokens, cost and time of a run, before it spends anything",
        epilog="examples:\n  datamill estimate runs/scores/map.yaml\n"
        "  datamill estimate recipe.yaml --out runs/x --sample-calls 20   # measure 20 real calls (reused by the run)",
    )
    recipe_args(sp)
    sp.add_argument("--sample", type=positive, default=1000, help="slots whose prompts are rendered (default 1000)")
    sp.add_argument("--sample-calls", type=non_negative, default=0, help="send this many sampled requests for real")
    sp.add_argument("--out", help="the run dir: sample calls land in its cache; the estimate is kept there")
    sp.add_argument("--on-bad-row", choices=["error", "skip"], help="see `datamill run --help`")
    sp.add_argument("--json", action="store_true", help="print as JSON")
    sp.set_defaults(fn=cmd_estimate)

    sp = sub.add_parser(
        "status",
        help="done/remaining slots, records, rate, ETA, missing and damaged parts of a run dir",
        epilog="example: datamill status runs/lt --json",
    )
    sp.add_argument("dir")
    sp.add_argument("--json", action="store_true", help="print as JSON")
    sp.add_argument(
        "--compare", metavar="BASE_RUN", help="drift of this run's LLM attempts against a smaller tier (exit 1: flags)"
    )
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

    sp = sub.add_parser(
        "merge",
        help="concatenate shards in slot order into one JSONL file",
        epilog="example: datamill merge runs/s0 runs/s1 --out all.jsonl",
    )
    sp.add_argument("dirs", nargs="+")
    sp.add_argument("--out", required=True)
    sp.add_argument("--allow-partial", action="store_true", help="merge even if slots have no part")
    sp.set_defaults(fn=cmd_merge)
