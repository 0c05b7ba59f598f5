"""Shipping verbs: export (a profile of a run as JSONL or Parquet) and release (gated Hub folder, push)."""

from __future__ import annotations

import argparse
from typing import Any

from datamill import api
from datamill.cli.common import trust_args
from datamill.errors import UsageError


def cmd_export(args: argparse.Namespace) -> int:
    done = api.export(args.dir, args.out, format=args.format, profile=args.profile, recipe=args.recipe,
                      allow_partial=args.allow_partial)  # fmt: skip
    print(f"export {done.profile}: {done.records:,} records -> {done.path} ({done.format}, {done.bytes:,} bytes, "
          f"sha256 {done.sha256[:16]}…)")  # fmt: skip
    print(f"metadata: {done.metadata}")
    return 0


def _tolerances(items: list[str] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items or []:
        key, _, value = item.partition("=")
        try:
            out[key] = float(value)
        except ValueError:
            raise UsageError(f"--tolerance: expected NAME=NUMBER, got {item!r}") from None
    return out


def cmd_release(args: argparse.Namespace) -> int:
    res = api.release(args.dir, args.out, golden=args.golden, baseline=args.baseline,
                      tolerances=_tolerances(args.tolerance), gates=args.gates, recipe=args.recipe, push=args.push,
                      private=args.private, tokenizer=args.tokenizer, count_tokens=not args.no_tokens)  # fmt: skip
    h, s = res.verify["header"], res.verify["summary"]
    print(f"release {h['recipe']['name']} ({h['recipe']['hash']}): {h['num_items']:,} records")
    for g in s["gates"]:
        verdict = "PASS" if g["passed"] else ("FAIL" if g["severity"] == "fail" else "WARN")
        bound = " ".join(x for x in (f"min {g['min']:g}" if g["min"] is not None else "",
                                     f"max {g['max']:g}" if g["max"] is not None else "") if x)  # fmt: skip
        print(f"{verdict} gate {g['metric']} = {g['value']} ({bound}, {g['severity']})")
    if res.golden is not None:
        rows = res.golden["rows"] or []
        ok = sum(1 for r in rows if r["passed"])
        print(f"{'PASS' if ok == len(rows) else 'FAIL'} golden: {ok}/{len(rows)} metrics within tolerance")
        for r in rows:
            if not r["passed"]:
                print(f"FAIL golden {r['metric']}: {r['current']} vs baseline {r['baseline']}")
    if not res.released:
        print(f"release blocked by {res.blocked_by[0]}" + (f" (and {len(res.blocked_by) - 1} more)"
                                                            if len(res.blocked_by) > 1 else ""))  # fmt: skip
        for reason in res.blocked_by[1:]:
            print(f"  also: {reason}")
        print(f"nothing was written to {res.out}")
        return 1
    for f in res.files:
        print(f"config {f.profile}: {f.records:,} records -> {f.path} ({f.bytes:,} bytes, sha256 {f.sha256[:16]}…)")
    print(f"release: {res.out} ({len(res.listing)} files: README.md, metadata.json, data/, reports/)")
    if res.pushed:
        print(f"pushed: {res.pushed}")
    return 0


def register(sub: Any) -> None:
    sp = sub.add_parser(
        "export",
        help="a run's records in the shape of an export profile, as JSONL or Parquet, with metadata.json",
        epilog="examples:\n  datamill export runs/x --profile schema_compat --out out/compat.parquet\n"
        "  datamill export runs/x --format jsonl --out out/full.jsonl",
    )
    sp.add_argument("dir", help="run dir")
    sp.add_argument("--format", choices=("jsonl", "parquet"), help="default: from --out's name, else parquet")
    sp.add_argument(
        "--profile", default="internal_full", help="an export profile of the recipe (default: internal_full)"
    )
    sp.add_argument("--out", help="file to write (default: RUN/exports/PROFILE.FORMAT); metadata.json goes beside it")
    sp.add_argument("--recipe", help="take the export profiles from this recipe (it must have made the run)")
    sp.add_argument("--allow-partial", action="store_true", help="export a run dir even if slots have no part")
    trust_args(sp)  # --recipe loads a recipe, and what it imports
    sp.set_defaults(fn=cmd_export)

    sp = sub.add_parser(
        "release",
        help="gates, golden regression, then a Hub dataset folder (card, Parquet configs, metadata); --push uploads",
        epilog="examples:\n  datamill release runs/x --out rel/x\n"
        "  datamill release runs/x --out rel/x --golden golden.json --baseline base.json --push my-org/my-data",
    )
    sp.add_argument("dir", help="run dir")
    sp.add_argument("--out", required=True, help="the release folder (new, empty, or an earlier release)")
    sp.add_argument("--golden", help="a golden set (`datamill golden create`) to regenerate and compare")
    sp.add_argument("--baseline", help="the golden report to compare with (`datamill golden run --out`)")
    sp.add_argument("--tolerance", action="append", metavar="NAME=VALUE", help="absolute tolerance for a metric")
    sp.add_argument("--gates", help="YAML file of gates (added to the recipe's gates)")
    sp.add_argument("--recipe", help="take exports, release and gates from this recipe (it must have made the run)")
    sp.add_argument("--push", metavar="ORG/NAME", help="upload to this Hub dataset repo (token from HF_TOKEN)")
    sp.add_argument("--private", action="store_true", help="with --push: create the repo private")
    sp.add_argument("--tokenizer", help="Hugging Face tokenizer.json or its directory (default ships in a package)")
    sp.add_argument("--no-tokens", action="store_true", help="skip token counts")
    trust_args(sp)  # a golden regression runs the recipe's code again
    sp.set_defaults(fn=cmd_release)
