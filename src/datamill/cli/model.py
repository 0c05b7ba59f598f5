"""Model verbs: doctor (the embedded model on this machine) and probe (a model's limits)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from datamill import api
from datamill.cli.common import Parser, key_from_env, non_negative, positive, write_json
from datamill.errors import UsageError


def cmd_doctor(args: argparse.Namespace) -> int:
    r = api.doctor()
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
    write_json(args.json, r)
    if not r["ok"]:
        print(f"error: {r.get('error', 'no tokens generated')}", file=sys.stderr)
        if r["advice"]:
            print(f"what to do: {r['advice']}", file=sys.stderr)
        return 1
    print("ok: the embedded model runs on this machine")
    return 0


def cmd_probe_server(args: argparse.Namespace) -> int:
    r = api.probe_server(args.base_url, args.model, key_from_env(args.api_key_env), args.max_words)
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
    write_json(args.json, r)
    return 0 if r["capabilities"]["chat"]["ok"] else 1


def cmd_probe_context(args: argparse.Namespace) -> int:
    sizes: list[int] = []
    if not args.base_url:
        try:
            sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
        except ValueError:
            raise UsageError(f"--sizes: expected comma-separated integers, got {args.sizes!r}") from None
        if not sizes or min(sizes) < 64:
            raise UsageError(f"--sizes: expected context sizes >= 64, got {args.sizes!r}")
    result = api.probe_context(sizes, args.base_url, args.model, key_from_env(args.api_key_env), args.max_words)
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
    write_json(args.json, result)
    return 0


def register(sub: Any) -> None:
    sp = sub.add_parser(
        "doctor",
        help="check the embedded model on this machine: CPU features, llama.cpp build, one generation",
        epilog="example: datamill doctor --json doctor.json",
    )
    sp.add_argument("--json", help="also write the result as JSON to this file")
    sp.set_defaults(fn=cmd_doctor)

    sp = sub.add_parser("probe", help="measure a model's limits")
    psub = sp.add_subparsers(dest="probe", required=True, parser_class=Parser)
    cp = psub.add_parser(
        "context",
        help="memory per context token, largest context, safe limit (80%%)",
        epilog="examples:\n  datamill probe context\n"
        "  datamill probe context --base-url http://127.0.0.1:8000/v1 --model smollm2",
    )
    cp.add_argument("--sizes", default="512,1024,2048,4096,8192", help="embedded: context sizes to try")
    cp.add_argument("--base-url", help="probe an OpenAI-compatible server instead of the embedded model")
    cp.add_argument("--model", help="the served model's name (with --base-url)")
    cp.add_argument("--api-key-env", help="environment variable holding the server's key")
    cp.add_argument("--max-words", type=positive, default=65_536, help="served: longest prompt to try")
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
    sv.add_argument("--max-words", type=non_negative, default=0, help="also find the largest prompt (0: skip)")
    sv.add_argument("--json", help="also write the result as JSON to this file")
    sv.set_defaults(fn=cmd_probe_server)
