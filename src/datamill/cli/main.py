"""``datamill <verb>``: argument parsing, display and exit codes over the Python API.

One module per verb group (``run``, ``quality``, ``release``, ``model``, ``bench``), each registering its
parsers and calling :mod:`datamill.api`; nothing here decides what a run does.

Exit codes: 0 success; 1 a run that ended with failed slots, or data that breaks an invariant;
2 bad input (recipe, flag, file), with one error line and nothing written; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from datamill import __version__, api
from datamill.cli import bench, model, quality, release, run
from datamill.cli.common import Parser, param_flags
from datamill.errors import DatamillError, RecipeError, SourceError


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="datamill",
        description="Synthetic datasets at any size, reproducibly.",
        epilog="example: datamill run lambda-traces --size 10000 --out runs/lt && datamill cat runs/lt | head",
    )
    p.add_argument("--version", action="version", version=f"datamill {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, parser_class=Parser)
    for group in (run, quality, release, model, bench):
        group.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if getattr(args, "verb", None) not in ("run", "plan") or not hasattr(args, "param"):
            parser.parse_args(argv)  # reports the unknown argument in argparse's words, exit 2
        try:
            args.param = (args.param or []) + param_flags(extra)
        except DatamillError as exc:
            print(f"datamill: error: {exc}", file=sys.stderr)
            return exc.exit_code
    try:
        if hasattr(args, "trust_code"):  # verbs that load a recipe: the config file's trust, and the flags
            api.trust(code=args.trust_code, hosts=args.trust_host or [])
        return int(args.fn(args))
    except (RecipeError, SourceError) as exc:
        print(str(exc), file=sys.stderr)  # FILE:LINE[:COL]: [field.path: ]message, like a compiler
        return exc.exit_code
    except DatamillError as exc:
        print(f"datamill: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("datamill: interrupted; committed parts are kept, re-run the same command to resume", file=sys.stderr)
        return 130


def entry() -> NoReturn:
    sys.exit(main())
