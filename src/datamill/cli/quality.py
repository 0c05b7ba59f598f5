"""Quality verbs: verify, dedup, golden, report, extract."""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from datamill import api
from datamill.cli.common import Parser, non_negative, param, positive, trust_args
from datamill.cli.run import print_dedup, print_telemetry
from datamill.errors import UsageError


def cmd_verify(args: argparse.Namespace) -> int:
    params = {"integration_span_cap": args.integration_span_cap} if args.integration_span_cap else None
    report = api.verify(args.target, tokenizer=args.tokenizer, gates=args.gates, report=args.report,
                        perf_budget_sec_per_100=args.perf_budget_sec_per_100, count_tokens=not args.no_tokens,
                        params=params, allow_partial=args.allow_partial)  # fmt: skip
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
        if "band" in g:  # a dashboard or safety gate: graded against its bands
            bands = ", ".join(f"{k} {v}" for k, v in g["bounds"].items())
            print(f"{verdict} {g['metric']} = {g['value']} [{g['band']}] ({bands}){why}")
            continue
        print(f"{verdict} {g['metric']} = {g['value']} ({bound}, {g['severity']}){why}")
    if "report_path" in report:
        print(f"report: {report['report_path']}")
    return 0 if s["passed"] else 1


def dedup_methods(text: str) -> str:
    """``--method a,b``: each a known method."""
    known = ("exact", "structural", "minhash", "semantic")
    for name in (t.strip() for t in text.split(",")):
        if name not in known:
            raise argparse.ArgumentTypeError(f"expected {', '.join(known)} (or several, comma-separated), got {name!r}")
    return text


def cmd_dedup(args: argparse.Namespace) -> int:
    res = api.dedup(args.dir, method=args.method, threshold=args.threshold, fields=args.field, rounds=args.rounds,
                    dry_run=args.dry_run, window=args.window, memory_mb=args.memory_mb)  # fmt: skip
    print_dedup(res)
    return 0 if not res.left_rejected else 1


def cmd_golden_create(args: argparse.Namespace) -> int:
    recipe = api.load_recipe(args.recipe, seed=args.seed, params=dict(args.param or []))
    stratify = [s.strip() for s in args.stratify.split(",") if s.strip()]
    doc = api.golden_create(recipe, args.size, stratify, args.out)
    print(
        f"golden set: {len(doc['slots']):,} slots over {len(doc['cells'])} cells of {', '.join(stratify)} -> {args.out}"
    )
    return 0


def cmd_golden_run(args: argparse.Namespace) -> int:
    recipe = api.load_recipe(args.recipe, seed=args.seed, params=dict(args.param or []))
    tolerances: dict[str, float] = {}
    for item in args.tolerance or []:
        key, _, value = item.partition("=")
        try:
            tolerances[key] = float(value)
        except ValueError:
            raise UsageError(f"--tolerance: expected NAME=NUMBER, got {item!r}") from None
    res = api.golden_run(recipe, args.golden, baseline=args.baseline, tolerances=tolerances, out=args.out)
    if res["rows"] is None:
        print(
            f"golden run: {res['current']['slots']} slots measured; no --baseline given"
            + (f", report: {args.out}" if args.out else "")
        )
        return 0
    rows = res["rows"]
    for r in rows:
        verdict = "PASS" if r["passed"] else "FAIL"
        tol = f"±{r['tolerance']:g}" if r["kind"] == "abs" else f"±{r['tolerance']:.0%}"
        print(f"{verdict} {r['metric']}: {r['current']} vs baseline {r['baseline']} ({tol})")
    failed = [r for r in rows if not r["passed"]]
    print(f"overall: {'FAIL' if failed else 'PASS'} ({len(rows) - len(failed)}/{len(rows)} metrics within tolerance)")
    return 1 if failed else 0


def cmd_extract(args: argparse.Namespace) -> int:
    n = api.extract(args.recipe, getattr(args, "in"), args.out, args.tokenizer)
    print(f"extracted {n:,} items -> {args.out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    if args.telemetry:
        t = api.telemetry(args.dir, write=True)
        if t is None:
            print(f"{args.dir}: no LLM attempts logged")
            return 0
        print_telemetry(t, full=True)
        if args.json:
            print(orjson.dumps(t, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"report: {api.report(args.dir, out=args.out)}")
    return 0


def register(sub: Any) -> None:
    sp = sub.add_parser(
        "verify",
        help="a quality report with gates on a run dir or a dataset file",
        epilog="example: datamill verify runs/lt --gates gates.yaml --report verify.json",
    )
    sp.add_argument("target", help="run dir, or a .jsonl / .jsonl.zst / .parquet file")
    sp.add_argument("--report", help="where to write the JSON report (default: RUN/reports/verify.json)")
    sp.add_argument("--tokenizer", help="Hugging Face tokenizer.json or its directory (default ships in a package)")
    sp.add_argument("--gates", help="YAML file of gates (added to the recipe's gates)")
    sp.add_argument("--perf-budget-sec-per-100", type=float, help="warn when verify takes longer per 100 items")
    sp.add_argument("--no-tokens", action="store_true", help="skip token counts")
    sp.add_argument("--integration-span-cap", type=positive, help="contextual items: the span cap to check")
    sp.add_argument("--allow-partial", action="store_true", help="verify a run dir even if slots have no part")
    sp.set_defaults(fn=cmd_verify)

    sp = sub.add_parser(
        "dedup",
        help="order-independent dedup of a run dir, regenerating rejected slots",
        epilog="example: datamill dedup runs/x --method minhash --threshold 0.8",
    )
    sp.add_argument("dir")
    sp.add_argument(
        "--method",
        type=dedup_methods,
        help="exact, structural, minhash or semantic, or several comma-separated (structural,minhash)",
    )
    sp.add_argument("--threshold", type=float, help="minhash: Jaccard (default 0.8); semantic: cosine (default 0.9)")
    sp.add_argument("--field", action="append", help="field(s) to compare (default: every string field but ids)")
    sp.add_argument("--rounds", type=positive, help="regeneration rounds (default 3)")
    sp.add_argument("--dry-run", action="store_true", help="report, rewrite nothing")
    sp.add_argument(
        "--window", type=positive, help="streaming mode: compare each record with the N before it (order-dependent)"
    )
    sp.add_argument(
        "--memory-mb",
        type=positive,
        help="memory budget of the staged exact/structural/minhash pass (default $DATAMILL_DEDUP_MEMORY_MB or 512)",
    )
    trust_args(sp)  # regeneration runs the recipe's code again
    sp.set_defaults(fn=cmd_dedup)

    sp = sub.add_parser(
        "extract",
        help="process targets of a recipe's items (contextual: span offsets)",
        epilog="example: datamill extract contextual --in runs/ctx --out ctx.extracted.jsonl",
    )
    sp.add_argument("recipe", help="contextual")
    sp.add_argument("--in", required=True, help="run dir or JSONL file of the recipe's items")
    sp.add_argument("--out", required=True, help="JSONL file to write")
    sp.add_argument("--tokenizer", help="Hugging Face tokenizer.json or its directory (default ships in a package)")
    sp.set_defaults(fn=cmd_extract)

    sp = sub.add_parser("golden", help="golden sets: fixed balanced slots, regenerated and compared")
    gsub = sp.add_subparsers(dest="golden", required=True, parser_class=Parser)
    gc = gsub.add_parser(
        "create",
        help="pick a fixed, balanced set of slots",
        epilog="example: datamill golden create recipe.yaml --stratify topic,level --size 200 --out golden.json",
    )
    gc.add_argument("recipe")
    gc.add_argument("--size", type=positive, default=200)
    gc.add_argument("--stratify", required=True, help="columns to balance over, comma-separated")
    gc.add_argument("--out", default="golden.json")
    gc.add_argument("--seed", type=non_negative)
    gc.add_argument("--param", type=param, action="append", metavar="KEY=VALUE")
    trust_args(gc)
    gc.set_defaults(fn=cmd_golden_create)
    gr = gsub.add_parser(
        "run",
        help="regenerate the golden slots and compare with a baseline",
        epilog="example: datamill golden run recipe.yaml --golden golden.json --baseline base.json",
    )
    gr.add_argument("recipe")
    gr.add_argument("--golden", required=True)
    gr.add_argument("--baseline", help="a report written by an earlier `golden run --out`")
    gr.add_argument("--out", help="write this run's metrics here (a baseline for later runs)")
    gr.add_argument("--tolerance", action="append", metavar="NAME=VALUE", help="absolute tolerance for a metric")
    gr.add_argument("--seed", type=non_negative)
    gr.add_argument("--param", type=param, action="append", metavar="KEY=VALUE")
    trust_args(gr)
    gr.set_defaults(fn=cmd_golden_run)

    sp = sub.add_parser(
        "report",
        help="the HTML report of a run dir (or --telemetry: the LLM summary)",
        epilog="examples:\n  datamill report runs/x\n  datamill report runs/x --telemetry --json",
    )
    sp.add_argument("dir")
    sp.add_argument("--telemetry", action="store_true", help="the LLM telemetry summary and drift flags")
    sp.add_argument("--json", action="store_true", help="also print the summary as JSON")
    sp.add_argument("--out", help="where to write the HTML report (default: RUN/reports/report.html)")
    sp.set_defaults(fn=cmd_report)
