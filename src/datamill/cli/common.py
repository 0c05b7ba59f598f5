"""What every verb module shares: the parser class, argument types, recipe arguments."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NoReturn

import orjson
from ruamel.yaml import YAML

from datamill import api
from datamill.errors import UsageError


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line and exits 2; epilogs keep their line breaks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        where = "" if self.prog == "datamill" else f"{self.prog.split()[-1]}: "
        self.exit(2, f"datamill: error: {where}{message} (see --help)\n")


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def param(text: str) -> tuple[str, Any]:
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


def param_flags(extra: list[str]) -> list[tuple[str, Any]]:
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
        out.append(param(f"{name}={value}"))
        i += 1
    return out


def recipe_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("recipe", help="recipe YAML file or built-in name (see `datamill recipes`)")
    sp.add_argument("--size", type=positive, help="number of slots (overrides the recipe)")
    sp.add_argument("--seed", type=non_negative, help="recipe seed (overrides the recipe)")
    sp.add_argument("--param", type=param, action="append", metavar="KEY=VALUE", help="override a recipe parameter")
    trust_args(sp)


def trust_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--trust-code", action="store_true", help="allow code from outside the recipe's folder and installed packages"
    )
    sp.add_argument("--trust-host", action="append", default=[], metavar="HOST", help="allow sending a key to HOST")


def load_recipe(args: argparse.Namespace, size: bool = True) -> api.Recipe:
    """The recipe a verb's arguments name, with --size/--seed/--param applied."""
    return api.load_recipe(args.recipe, size=args.size if size else None, seed=args.seed, params=dict(args.param or []))


def write_json(path: str | Path | None, doc: Any) -> None:
    if path:
        Path(path).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))


def key_from_env(var: str | None) -> str | None:
    import os

    if not var:
        return None
    key = os.environ.get(var)
    if not key:
        raise UsageError(f"--api-key-env: environment variable {var} is not set")
    return key
