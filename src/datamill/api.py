"""The Python API: the one entry point. The CLI is a thin shell over these functions.

This module composes the engine (plan, run, commit, status) with quality (verify, dedup,
reports, golden sets) and owns what happens after a run: dedup when the recipe asks for it, the
telemetry summary, reports. The engine never imports quality; both are reached from here.

::

    import datamill

    recipe = datamill.load_recipe("examples/cards-embedded.yaml", size=8)
    result = datamill.run(recipe, "runs/cards", workers=1)
    ds = datamill.read("runs/cards")
    df = ds.to_pandas()
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from datamill.errors import DataError, InputError, RecipeError, UsageError

__all__ = [
    "Dataset",
    "Recipe",
    "ReleaseResult",
    "RunResult",
    "builtin_recipes",
    "cat",
    "dedup",
    "doctor",
    "estimate",
    "export",
    "fsck",
    "golden_create",
    "golden_run",
    "load_recipe",
    "map",
    "map_recipe",
    "merge",
    "plan",
    "read",
    "release",
    "report",
    "run",
    "status",
    "telemetry",
    "touches",
    "verify",
]


# -- recipes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """A validated recipe with its source text (what the run dir's manifest records)."""

    loaded: Any  # datamill.recipe.LoadedRecipe
    text: str
    size_given: bool = False  # the size was asked for (a plan file's total must then match it)

    @property
    def name(self) -> str:
        return str(self.loaded.recipe.name)

    @property
    def hash(self) -> str:
        """Covers everything that decides the output (not workers, shards or operational settings)."""
        return str(self.loaded.hash)

    @property
    def size(self) -> int:
        return int(self.loaded.recipe.size)

    @property
    def seed(self) -> int:
        return int(self.loaded.recipe.seed)

    @property
    def model(self) -> Any:
        """The validated pydantic model of the recipe (``datamill.recipe.model.Recipe``)."""
        return self.loaded.recipe

    def with_overrides(
        self,
        *,
        size: int | None = None,
        seed: int | None = None,
        params: dict[str, Any] | None = None,
        on_bad_row: str | None = None,
    ) -> Recipe:
        loaded = self.loaded.with_overrides(size=size, seed=seed, params=params or {}, on_bad_row=on_bad_row)
        return Recipe(loaded, self.text, self.size_given or size is not None)


def builtin_recipes() -> dict[str, str]:
    """Built-in recipe names and what each makes."""
    from datamill.recipes import BUILTINS

    return {name: desc for name, (_, desc) in BUILTINS.items()}


def _yaml_text(data: dict[str, Any]) -> str:
    from ruamel.yaml import YAML

    buf = io.StringIO()
    yaml = YAML(typ="rt")  # keeps the dict's key order, so errors point where the user expects
    yaml.default_flow_style = False
    yaml.dump(data, buf)
    return buf.getvalue()


def load_recipe(
    source: str | Path | dict[str, Any] | Any,
    *,
    size: int | None = None,
    seed: int | None = None,
    params: dict[str, Any] | None = None,
    base_dir: str | Path | None = None,
    on_bad_row: str | None = None,
) -> Recipe:
    """A recipe from a YAML file, a built-in name, YAML text, a dict or the pydantic model.

    Every form goes through the same validation and raises the same :class:`RecipeError`
    (``FILE:LINE:COL: field.path: message``; a dict or model is shown as YAML text named
    ``<dict>``). Relative generator and schema paths resolve against ``base_dir`` (the file's
    folder for a file; the current directory otherwise).
    """
    from datamill.recipe import load_file, load_text
    from datamill.recipe.model import Recipe as RecipeModel
    from datamill.recipes import BUILTINS, builtin_path

    if isinstance(source, RecipeModel):
        source = source.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if isinstance(source, dict):
        text = _yaml_text(source)
        loaded = load_text(text, "<dict>", Path(base_dir or Path.cwd()))
    elif isinstance(source, str) and "\n" in source:
        text = source
        loaded = load_text(text, "<text>", Path(base_dir or Path.cwd()))
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            builtin = builtin_path(str(source))
            if builtin is None:
                ref = str(source)
                if ref.endswith((".yaml", ".yml")) or "/" in ref:
                    raise RecipeError(ref, 0, 0, "", "no such recipe file")
                raise UsageError(f"unknown recipe {ref!r}: not a file and not a built-in ({', '.join(BUILTINS)})")
            path = builtin
        loaded = load_file(path)
        text = path.read_text(encoding="utf-8")
    else:
        kind = type(source).__name__
        raise UsageError(f"load_recipe: expected a path, YAML text, a dict or a Recipe model, got {kind}")
    loaded = loaded.with_overrides(size=size, seed=seed, params=dict(params or {}), on_bad_row=on_bad_row)
    return Recipe(loaded, text, size is not None)


def _recipe(recipe: Recipe | str | Path | dict[str, Any]) -> Recipe:
    return recipe if isinstance(recipe, Recipe) else load_recipe(recipe)


@dataclass
class PlanInfo:
    """What a recipe expands to, before any work: slots, quota cells, cycles, shard ranges."""

    recipe: Recipe
    plan: Any  # datamill.engine.Plan
    num_shards: int = 1
    shards: list[dict[str, int]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {**self.plan.summary(), "shards": self.shards}


def plan(
    recipe: Recipe | str | Path | dict[str, Any], num_shards: int = 1, *, plan_file: str | Path | None = None
) -> PlanInfo:
    """The deterministic plan of ``recipe``, split into ``num_shards`` shards; a planner recipe's
    categories come from ``plan_file`` (without one, they are decided when the run starts)."""
    from datamill.engine import Plan

    if num_shards < 1:
        raise UsageError(f"--num-shards: expected an integer >= 1, got {num_shards}")
    r = _recipe(recipe)
    if plan_file is not None:
        r = _planned(r, None, plan_file)
    p = Plan(r.loaded.recipe, r.loaded.tables)
    shards = []
    for s in range(num_shards):
        lo, hi = p.shard_bounds(num_shards, s)
        parts = len(range(lo // p.part_size, (hi - 1) // p.part_size + 1)) if hi > lo else 0
        shards.append({"index": s, "start": lo, "end": hi, "parts": parts})
    return PlanInfo(r, p, num_shards, shards)


def _planned(r: Recipe, out: str | Path | None, plan_file: str | Path | dict[str, Any] | None,
             use_cache: bool = True) -> Recipe:  # fmt: skip
    """``r`` with its plan resolved (see :mod:`datamill.engine.planner`); unchanged without a planner."""
    from datamill.engine.planner import resolve_plan

    if r.loaded.recipe.planner is None and plan_file is None:
        return r
    if isinstance(plan_file, (str, Path)):
        plan_file = _plan_path(plan_file)
    if out is None:  # only showing a plan: nothing is asked or saved
        with tempfile.TemporaryDirectory() as tmp:
            loaded = resolve_plan(r.loaded, tmp, plan_file, size_given=r.size_given, use_cache=False)
    else:
        loaded = resolve_plan(r.loaded, out, plan_file, size_given=r.size_given, use_cache=use_cache)
    return Recipe(loaded, r.text, r.size_given)


def _plan_path(plan: str | Path) -> Path:
    """A plan file's path, or the file of a plan shipped with datamill (``customer-service``)."""
    from datamill.recipes import builtin_plan

    p = Path(plan)
    if p.exists() or "/" in str(plan) or p.suffix:
        return p
    found = builtin_plan(str(plan))
    if found is None:
        raise UsageError(f"--plan: no such file {plan} (and no built-in plan of that name)")
    return found


def saved_plan(run_dir: str | Path) -> dict[str, Any] | None:
    """The plan a planner recipe's run dir was made with (``RUN/plan.json``), or None."""
    from datamill.engine.planner import saved_plan as _saved

    return _saved(run_dir)


def touches(recipe: Recipe | str | Path | dict[str, Any]) -> dict[str, Any]:
    """The code a recipe imports, the files it reads, the hosts it contacts, the env vars it reads."""
    from datamill.recipe.trust import touches as _touches

    return _touches(_recipe(recipe).loaded)


def trust(*, code: bool = False, hosts: Sequence[str] = ()) -> None:
    """Widen the config file's trust for this process: any code, and hosts that may get keys."""
    from datamill.recipe import trust as _trust

    policy = _trust.load_config()
    policy.code = policy.code or code
    policy.hosts |= {h.lower() for h in hosts}
    _trust.set_policy(policy)


# -- running ----------------------------------------------------------------------------------


@dataclass
class RunResult:
    """One invocation's outcome: the summary, failures, the LLM telemetry, dedup (if run)."""

    out: Path
    summary: Any  # datamill.engine.run.RunSummary
    telemetry: dict[str, Any] | None = None
    dedup: Any = None  # datamill.quality.dedup.DedupResult when the recipe asked for it
    dedup_waiting: bool = False  # the recipe asks for dedup but other shards are not done

    @property
    def failures(self) -> list[dict[str, Any]]:
        """The first failed slots (all are in ``logs/run.jsonl``)."""
        return list(self.summary.failed_examples)

    @property
    def exit_code(self) -> int:
        return int(self.summary.exit_code)


def run(
    recipe: Recipe | str | Path | dict[str, Any],
    out: str | Path,
    *,
    workers: int | None = None,
    num_shards: int = 1,
    shard_index: int = 0,
    executor: str = "local",
    address: str | None = None,
    progress: bool | str = True,
    use_cache: bool = True,
    retry_failed: bool = False,
    plan: str | Path | dict[str, Any] | None = None,
) -> RunResult:
    """Run (or resume) ``recipe`` into the run dir ``out``; then dedup if the recipe asks and
    every slot is done, and write ``reports/telemetry.json`` when LLM columns ran.

    ``retry_failed`` first runs again the slots that ended failed in committed parts (keeping
    every other record byte for byte), e.g. with a longer timeout in the model block. A recipe
    with a ``planner:`` is planned first: by ``plan`` (a file, a built-in plan's name or a dict),
    else by the plan saved in ``out``, else by asking the planner model (once per run dir).

    ``executor="ray"`` runs the ranges as Ray tasks (``pip install 'datamill[ray]'``): on the
    cluster at ``address`` (``out`` on storage every node mounts at the same path), or on a local
    Ray instance started for the run; ``workers`` is tasks at a time (default: the cluster's CPUs).
    The output is byte-identical to the local executor's, and either may resume the other's run."""
    import os

    from datamill.engine import LocalExecutor, execute
    from datamill.engine.run import check_shards
    from datamill.progress import make_progress

    r = _recipe(recipe)
    check_shards(num_shards, shard_index)
    if executor not in ("local", "ray"):
        raise UsageError(f"executor: expected 'local' or 'ray', got {executor!r}")
    if address is not None and executor != "ray":
        raise UsageError(f"--address {address}: only the ray executor connects to a cluster (add --executor ray)")
    r = _planned(r, out, plan, use_cache)
    runner: Any
    if executor == "ray":
        from datamill.engine.executors.ray import RayExecutor

        runner = RayExecutor(workers, address)
    else:
        runner = LocalExecutor(workers or os.cpu_count() or 1)
    label = r.name if num_shards == 1 else f"{r.name} [shard {shard_index}/{num_shards}]"
    summary = execute(
        r.loaded,
        r.text,
        out,
        num_shards=num_shards,
        shard_index=shard_index,
        executor=runner,
        progress=make_progress(progress, label),
        use_cache=use_cache,
        retry_failed=retry_failed,
    )
    result = RunResult(Path(out), summary)
    spec = r.loaded.recipe.dedup
    if spec is not None and summary.stopped == "completed" and not summary.slots_failed:
        if status(out).summary.slots_remaining:
            result.dedup_waiting = True
        else:
            from datamill.quality.dedup import dedup_run

            result.dedup = dedup_run(out, spec.method, spec.threshold, spec.fields, spec.rounds,
                                     on_exhausted=spec.on_exhausted, by=spec.by, auto=True)  # fmt: skip
            if result.dedup.failed:  # quotas not met with unique records: those slots fail, the run exits 1
                summary.slots_failed += len(result.dedup.failed)
                summary.slots_done -= len(result.dedup.failed)
                room = max(0, 5 - len(summary.failed_examples))
                summary.failed_examples.extend(result.dedup.failed[:room])
    result.telemetry = telemetry(out, write=True)
    return result


def map_recipe(
    source: str | Path,
    prompt: str,
    column: str,
    *,
    key: str | None = None,
    format: str = "auto",
    schema: dict[str, Any] | str | Path | None = None,
    system: str | None = None,
    model: dict[str, Any] | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    pack: int | None = None,
    part_size: int | None = None,
    size: int | None = None,
    seed: int = 0,
    on_bad_row: str | None = None,
) -> Recipe:
    """The recipe of a one-off map: ``prompt`` asked once per row of ``source``, the answer in ``column``.

    ``schema`` is a JSON schema (a dict, or a ``.json`` file, inlined so the recipe stands alone);
    ``model`` is a model block (default: the embedded model).
    """
    llm: dict[str, Any] = {"prompt": prompt}
    if system:
        llm["system"] = system
    if schema is not None:
        if not isinstance(schema, dict):
            try:
                schema = orjson.loads(Path(schema).read_bytes())
            except OSError as exc:
                raise UsageError(f"--schema: cannot read {schema}: {exc.strerror}") from None
            except orjson.JSONDecodeError as exc:
                raise UsageError(f"--schema: {schema} is not JSON: {exc}") from None
        llm["schema"] = schema
    if max_tokens is not None:
        llm["max_tokens"] = max_tokens
    if temperature is not None:
        llm["temperature"] = temperature
    if pack is not None:
        llm["pack"] = pack
    src: dict[str, Any] = {"path": str(Path(source).resolve()), "format": format}
    if key:
        src["key"] = key
    data: dict[str, Any] = {"name": "map", "seed": seed, "source": src, "columns": {column: {"llm": llm}}}
    if model:
        data["model"] = model
    if part_size is not None:
        data["output"] = {"part_size": part_size}
    r = load_recipe(data, size=size, on_bad_row=on_bad_row)
    return Recipe(r.loaded, _yaml_text(data))


def map(
    source: str | Path,
    prompt: str,
    column: str,
    out: str | Path,
    *,
    workers: int | None = 1,
    progress: bool | str = True,
    retry_failed: bool = False,
    **recipe: Any,
) -> RunResult:
    """Run :func:`map_recipe` into ``out`` (re-running the same call resumes) and keep the recipe
    beside the run as ``out/map.yaml``, so ``datamill run out/map.yaml --out out`` resumes it too."""
    r = map_recipe(source, prompt, column, **recipe)
    try:
        return run(r, out, workers=workers, progress=progress, retry_failed=retry_failed)
    finally:
        from datamill.store import RunDir, atomic

        rd = RunDir(out)  # only beside its own run: a refused map never overwrites another run's recipe
        if rd.exists() and rd.manifest().get("recipe_hash") == r.hash:
            atomic.write_bytes(Path(out) / "map.yaml", r.text.encode())


def estimate(
    recipe: Recipe | str | Path | dict[str, Any],
    *,
    sample: int = 1000,
    sample_calls: int = 0,
    out: str | Path | None = None,
) -> Any:
    """Requests, prompt and completion tokens, cost and time of running ``recipe``, before any run.

    Nothing is sent unless ``sample_calls`` > 0: then that many sampled requests are sent through
    the run dir ``out`` (its cache, limits and budget: the run reuses their answers) to measure the
    server's token count, completion lengths and latency. With ``out``, the estimate is kept in
    ``out/reports/estimate.json`` and ``datamill status`` shows it beside the actual numbers.
    """
    from datamill.engine.estimate import estimate as make_estimate
    from datamill.engine.estimate import write_estimate
    from datamill.engine.plan import Plan
    from datamill.engine.run import check_source, manifest_for, open_run_dir

    r = _recipe(recipe)
    if sample < 1:
        raise UsageError(f"--sample: expected an integer >= 1, got {sample}")
    if sample_calls < 0:
        raise UsageError(f"--sample-calls: expected an integer >= 0, got {sample_calls}")
    if sample_calls and out is None:
        raise UsageError("--sample-calls needs --out DIR: the run dir whose cache keeps the answers for the run")
    check_source(r.loaded)
    notes: list[str] = []
    if r.loaded.recipe.planner is not None and "plan" not in r.loaded.recipe.params:
        if out is not None and saved_plan(out) is not None:
            r = _planned(r, out, None)  # the run dir's plan: nothing is asked
        else:
            if sample_calls:
                raise UsageError("--sample-calls: the recipe's categories are not planned yet; run it once (it plans "
                                 "first) or give the run dir of a planned run as --out")  # fmt: skip
            placeholder = {"name": "planned", "description": "a category the planner decides", "count": r.size,
                           "example_inputs": [], "expectations": []}  # fmt: skip
            r = Recipe(r.loaded.with_overrides(params={"plan": {"categories": [placeholder]}}), r.text, r.size_given)
            notes.append("categories are decided by the planner when the run starts: prompts counted with one "
                         "placeholder category, and the planner's own request is not counted")  # fmt: skip
            out = None  # a manifest now would not carry the plan the run will have
    run_dir = None
    if out is not None:
        rd = open_run_dir(r.loaded, out)
        rd.create(manifest_for(r.loaded, Plan(r.loaded.recipe, r.loaded.tables), r.text))
        run_dir = rd.path
    est = make_estimate(r.loaded, sample=sample, sample_calls=sample_calls, run_dir=run_dir)
    est.notes.extend(notes)
    if run_dir is not None:
        write_estimate(run_dir, est)
    return est


def status(run_dir: str | Path) -> Any:
    """Done, failed, remaining slots, records, rate, ETA, missing and damaged parts of a run dir."""
    from datamill.engine import run_status

    return run_status(run_dir)


def compare_tiers(base_run: str | Path, run_dir: str | Path) -> dict[str, Any]:
    """Seed 003's tier check: ``run_dir``'s LLM attempts against a smaller run's (``base_run``):
    repair-rate growth, latency and success-rate drops flagged by the drift rules."""
    from datamill.llm.telemetry import compare_tiers as _compare
    from datamill.llm.telemetry import read_attempts
    from datamill.store import RunDir

    rows = []
    for d in (base_run, run_dir):
        rd = RunDir(d)
        rd.manifest()  # refuses a dir that is not a run dir
        rows.append([r for r in read_attempts(rd.logs_dir / "attempts.jsonl") if "status" in r])
    return _compare(rows[0], rows[1])


def telemetry(run_dir: str | Path, *, write: bool = False) -> dict[str, Any] | None:
    """The LLM summary of a run dir (from ``logs/attempts.jsonl``); None without LLM attempts."""
    from datamill.llm.telemetry import read_attempts, summarize
    from datamill.store import RunDir, atomic

    rd = RunDir(run_dir)
    rd.manifest()  # refuses a dir that is not a run dir
    rows = list(read_attempts(rd.logs_dir / "attempts.jsonl"))
    if not rows:
        return None
    t = summarize(rows)
    if write:
        atomic.write_bytes(rd.reports_dir / "telemetry.json", orjson.dumps(t, option=orjson.OPT_INDENT_2))
    return t


# -- reading ----------------------------------------------------------------------------------


class Dataset:
    """Records of a run dir (in slot order, every part checked) or of a dataset file.

    Iterating streams records; ``to_list``, ``to_arrow``, ``to_pandas`` and ``to_hf`` materialise
    them (pyarrow, pandas and ``datasets`` are imported when called).
    """

    def __init__(self, source: str | Path, allow_partial: bool = False) -> None:
        self.source = Path(source)
        self.allow_partial = allow_partial
        if not self.source.exists():
            raise InputError(f"{source}: no such run dir or file")

    def lines(self) -> Iterator[bytes]:
        from datamill.store.reader import iter_dataset_lines

        return iter_dataset_lines(self.source, self.allow_partial)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for line in self.lines():
            yield orjson.loads(line)

    def to_list(self) -> list[dict[str, Any]]:
        return list(self)

    def to_arrow(self) -> Any:
        import pyarrow as pa

        return pa.Table.from_pylist(self.to_list())

    def to_pandas(self) -> Any:
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise UsageError("to_pandas needs pandas: pip install 'datamill[hf]'") from None
        return self.to_arrow().to_pandas()

    def to_hf(self) -> Any:
        """A ``datasets.Dataset`` with the same records (values and types)."""
        try:
            import datasets
        except ImportError:
            raise UsageError("to_hf needs the datasets package: pip install 'datamill[hf]'") from None
        return datasets.Dataset(self.to_arrow())


def read(source: str | Path, *, allow_partial: bool = False) -> Dataset:
    """The records of a run dir or a dataset file (.jsonl, .jsonl.zst, .parquet)."""
    return Dataset(source, allow_partial)


def cat(run_dir: str | Path, out: IO[bytes], *, allow_partial: bool = False) -> int:
    """Write a run dir's records as JSONL to ``out`` in slot order; returns the parts written."""
    from datamill.store import write_in_order

    return write_in_order(run_dir, out, allow_partial=allow_partial)


def merge(dirs: Sequence[str | Path], out: str | Path, *, allow_partial: bool = False) -> Any:
    """Shards -> one JSONL file in slot order, atomically; duplicates and gaps refused."""
    from datamill.store import merge as _merge

    return _merge(dirs, out, allow_partial=allow_partial)


def fsck(run_dir: str | Path, *, repair: bool = False) -> Any:
    """Check every part and meta; with ``repair``, quarantine damage for the next run to remake."""
    from datamill.store.integrity import fsck as _fsck

    return _fsck(run_dir, repair=repair)


def describe_gaps(gaps: Sequence[tuple[int, int]], planned: int) -> str:
    from datamill.store.reader import describe_gaps as _describe

    return _describe(gaps, planned)


# -- quality ----------------------------------------------------------------------------------


def verify(
    target: str | Path,
    *,
    tokenizer: str | Path | None = None,
    gates: str | Path | Sequence[Any] | None = None,
    report: str | Path | None = None,
    perf_budget_sec_per_100: float | None = None,
    count_tokens: bool = True,
    params: dict[str, Any] | None = None,
    allow_partial: bool = False,
) -> dict[str, Any]:
    """The verify report of a run dir or dataset file, with the recipe's gates plus ``gates``
    (a YAML file or GateSpec list); written to ``report`` (default: RUN/reports/verify.json)."""
    from datamill.quality import load_gates
    from datamill.quality import verify as _verify
    from datamill.recipe.model import GateSpec
    from datamill.store import RunDir, atomic

    t = Path(target)
    specs: list[Any] = []
    if t.is_dir():
        specs = [GateSpec.model_validate(g) for g in RunDir(t).manifest()["recipe"].get("gates") or []]
    if isinstance(gates, (str, Path)):
        specs += load_gates(gates)
    elif gates:
        specs += list(gates)
    out = Path(report) if report else (t / "reports" / "verify.json" if t.is_dir() else None)
    if out is not None and not out.parent.is_dir():
        raise UsageError(f"--report: {out.parent}: no such directory")
    doc = _verify(t, tokenizer=tokenizer, gates=specs, perf_budget_sec_per_100=perf_budget_sec_per_100,
                  count_tokens=count_tokens, params=params, allow_partial=allow_partial)  # fmt: skip
    if out is not None:
        atomic.write_bytes(out, orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        doc["report_path"] = str(out)
    return doc


def dedup(
    run_dir: str | Path,
    *,
    method: str | Sequence[str] | None = None,
    threshold: float | None = None,
    fields: Sequence[str] | None = None,
    rounds: int | None = None,
    dry_run: bool = False,
    window: int | None = None,
    memory_mb: int | None = None,
) -> Any:
    """Order-independent dedup of a run dir; rejected slots regenerated through the engine.

    ``memory_mb`` bounds the staged pass (exact, structural, minhash) whatever the run's size.
    """
    from datamill.quality.dedup import dedup_run
    from datamill.store import RunDir

    spec = RunDir(run_dir).manifest()["recipe"].get("dedup") or {}
    method = method or spec.get("method") or "exact"
    threshold = threshold if threshold is not None else spec.get("threshold")
    if threshold is not None and not 0 < threshold <= 1:
        raise UsageError(f"--threshold: expected a similarity in (0, 1], got {threshold}")
    return dedup_run(run_dir, method, threshold, fields or spec.get("fields"), rounds or spec.get("rounds", 3),
                     write=not dry_run, window=window, on_exhausted=spec.get("on_exhausted", "drop"),
                     by=spec.get("by"), memory_mb=memory_mb)  # fmt: skip


def report(run_dir: str | Path, *, out: str | Path | None = None) -> Path:
    """The self-contained HTML report of a run dir (default: RUN/reports/report.html)."""
    from datamill.quality.report import write_report
    from datamill.store import RunDir

    RunDir(run_dir).manifest()
    return write_report(run_dir, out)


def golden_create(
    recipe: Recipe | str | Path | dict[str, Any], size: int, stratify: Sequence[str], out: str | Path
) -> dict[str, Any]:
    """A fixed, balanced set of slots over the ``stratify`` columns, written to ``out``."""
    from datamill.quality import golden

    if not stratify:
        raise UsageError("--stratify: expected one or more column names, comma-separated")
    return golden.create(_recipe(recipe).loaded, size, list(stratify), out)


def golden_run(
    recipe: Recipe | str | Path | dict[str, Any],
    golden_file: str | Path,
    *,
    baseline: str | Path | None = None,
    tolerances: dict[str, float] | None = None,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Regenerate the golden slots, measure them, and compare with ``baseline`` when given."""
    from datamill.quality import golden

    doc = golden.load(golden_file)
    with tempfile.TemporaryDirectory(prefix="datamill-golden-") as tmp:
        current = golden.measure(_recipe(recipe).loaded, doc, Path(tmp))
    if out:
        Path(out).write_bytes(orjson.dumps(current, option=orjson.OPT_INDENT_2))
    result: dict[str, Any] = {"current": current, "rows": None, "passed": None}
    if baseline:
        try:
            base = orjson.loads(Path(baseline).read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise UsageError(f"--baseline: {baseline}: {exc}") from None
        rows = golden.compare(current, base, {**golden.TOLERANCES, **(tolerances or {})})
        result.update(rows=rows, passed=all(r["passed"] for r in rows))
    return result


# -- export and release -----------------------------------------------------------------------


def _shipping_recipe(run_dir: str | Path, recipe: Recipe | str | Path | dict[str, Any] | None) -> tuple[
    dict[str, Any], Path, dict[str, Any]]:  # fmt: skip
    """The recipe (as a dict) whose exports, release block and gates a shipment of ``run_dir`` follows,
    its folder, and the run's manifest: the run's own recipe, or ``recipe`` if it made the same records.

    Exports, the release block and gates are left out of the recipe hash, so a recipe edited
    after the run (a new profile, a licence) still matches the run it describes.
    """
    from datamill.store import RunDir

    manifest = RunDir(run_dir).manifest()
    if recipe is None:
        return manifest["recipe"], Path(manifest.get("recipe_file") or ".").parent, manifest
    m = manifest["recipe"]
    r = _recipe(recipe).with_overrides(size=m["size"], seed=m["seed"], params=m.get("params") or None)
    if r.hash != manifest["recipe_hash"]:
        raise UsageError(f"--recipe: {r.name} (hash {r.hash}) did not make {run_dir} (recipe "
                         f"{manifest['recipe_name']}, hash {manifest['recipe_hash']})")  # fmt: skip
    return r.model.model_dump(mode="json"), Path(r.loaded.base_dir), manifest


def export(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    format: str | None = None,
    profile: str = "internal_full",
    recipe: Recipe | str | Path | dict[str, Any] | None = None,
    allow_partial: bool = False,
) -> Any:
    """Export a run dir's records in the shape of an export profile, as JSONL or Parquet (zstd),
    with ``metadata.json`` beside the file; returns a ``datamill.quality.export.ExportedFile``.

    ``out`` defaults to ``RUN/exports/PROFILE.parquet``; the format comes from ``format`` or the
    file name. Every record is checked against the profile's schema; the first that fails stops
    the export, named in a :class:`DataError`, and nothing is written. ``recipe`` takes the
    profiles from a recipe file edited since the run (it must have made the same records).
    """
    from datamill.quality import export as ex

    data, base_dir, manifest = _shipping_recipe(run_dir, recipe)
    chosen = ex.pick_profile(ex.load_profiles(data, base_dir), profile)
    if out is None:
        fmt = format or "parquet"
        target = Path(run_dir) / "exports" / f"{profile}.{fmt}"
        target.parent.mkdir(exist_ok=True)
    else:
        target = Path(out)
    fmt = ex.format_of(target, format)
    if not target.parent.is_dir():
        raise UsageError(f"--out: {target.parent}: no such directory")
    ex.check_metadata_target(target.parent, manifest)
    done = ex.export_file(run_dir, chosen, fmt, target, allow_partial=allow_partial)
    done.metadata = ex.write_metadata(target.parent, manifest, [done], ex.model_identities(run_dir, data))
    return done


@dataclass
class ReleaseResult:
    """A release: built (``released``), or blocked by the gates and golden metrics in ``blocked_by``."""

    out: Path
    released: bool
    blocked_by: list[str]
    verify: dict[str, Any]
    golden: dict[str, Any] | None = None
    files: list[Any] = field(default_factory=list)  # datamill.quality.export.ExportedFile, one per config
    listing: list[str] = field(default_factory=list)  # the folder's files
    pushed: str | None = None  # the Hub commit URL

    @property
    def exit_code(self) -> int:
        return 0 if self.released else 1


def release(
    run_dir: str | Path,
    out: str | Path,
    *,
    golden: str | Path | None = None,
    baseline: str | Path | None = None,
    tolerances: dict[str, float] | None = None,
    gates: str | Path | Sequence[Any] | None = None,
    recipe: Recipe | str | Path | dict[str, Any] | None = None,
    push: str | None = None,
    private: bool = False,
    tokenizer: str | Path | None = None,
    count_tokens: bool = True,
) -> ReleaseResult:
    """Gate a run and, if nothing blocks, write it to ``out`` as a Hub dataset folder.

    Blocking: a failed slot, a repeated sample_id, a ``fail`` gate (the recipe's, plus ``gates``),
    a golden metric past tolerance (``golden`` and ``baseline``, see :func:`golden_run`). Blocked,
    nothing is written to ``out`` and ``released`` is False; otherwise ``out`` holds the card,
    the exports as Parquet, ``metadata.json`` and the reports, and ``push`` (``ORG/NAME``) uploads
    it with the token in ``HF_TOKEN``.
    """
    import os

    from datamill.quality import load_gates
    from datamill.quality import release as rel
    from datamill.quality import verify as _verify
    from datamill.recipe.model import GateSpec
    from datamill.store import RunDir, atomic

    if (golden is None) != (baseline is None):
        raise UsageError("--golden and --baseline go together: the golden set, and a report of "
                         "`datamill golden run --out` to compare with")  # fmt: skip
    token = None
    if push is not None:
        rel.check_repo_id(push)
        token = os.environ.get("HF_TOKEN")
        if not token:
            raise UsageError("--push: set HF_TOKEN in the environment (a Hub token with write access)")
    target = Path(out)
    rel.check_target(target)
    data, base_dir, manifest = _shipping_recipe(run_dir, recipe)
    plan = rel.plan_release(data, base_dir)  # bad profiles and schema files fail here, before any work
    specs: list[Any] = [GateSpec.model_validate(g) for g in data.get("gates") or []]
    if isinstance(gates, (str, Path)):
        specs += load_gates(gates)
    elif gates:
        specs += list(gates)

    blocked: list[str] = []
    st = status(run_dir)
    if st.missing:
        gaps = ", ".join(f"[{a}, {b})" for a, b in st.missing[:3]) + (" ..." if len(st.missing) > 3 else "")
        missing = sum(b - a for a, b in st.missing)
        raise DataError(f"release: {run_dir}: {missing:,} of {manifest['plan']['slots']:,} slots have no committed "
                        f"part ({gaps}); finish the run first; nothing was written")  # fmt: skip
    failed = st.summary.slots_failed
    if failed:
        blocked.append(f"failed slots: {failed:,} slots failed (`datamill run ... --retry-failed` runs them again)")
    doc = _verify(run_dir, tokenizer=tokenizer, gates=specs, count_tokens=count_tokens)
    atomic.write_bytes(RunDir(run_dir).reports_dir / "verify.json", orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    s = doc["summary"]
    if s["duplicate_sample_id_count"]:
        blocked.append(f"duplicate_sample_ids: {s['duplicate_sample_id_count']:,} repeated")
    for g in s["gates"]:
        if not g["passed"] and g["severity"] == "fail":
            blocked.append(f"gate {g['metric']} = {g['value']}" + (f": {g['reason']}" if g.get("reason") else ""))
    gold = None
    if golden is not None:
        from datamill.recipe import load_text

        m = manifest["recipe"]
        loaded = load_text(manifest["recipe_text"], manifest["recipe_file"], Path(manifest["recipe_file"]).parent)
        loaded = loaded.with_overrides(size=m["size"], seed=m["seed"], params=m.get("params") or None)
        gold = golden_run(Recipe(loaded, manifest["recipe_text"]), golden, baseline=baseline, tolerances=tolerances)
        for row in gold["rows"] or []:
            if not row["passed"]:
                tol = f"±{row['tolerance']:g}" if row["kind"] == "abs" else f"±{row['tolerance']:.0%}"
                blocked.append(f"golden {row['metric']} = {row['current']} (baseline {row['baseline']} {tol})")
    result = ReleaseResult(target, not blocked, blocked, doc, gold)
    if blocked:
        return result
    built = rel.build(run_dir, target, manifest=manifest, plan=plan, verify=doc, golden=gold,
                      telemetry=telemetry(run_dir), repo_id=push)  # fmt: skip
    result.files, result.listing = built.files, built.listing
    if push is not None and token:
        result.pushed = rel.push(target, push, token, private=private)
    return result


def extract(recipe: str, source: str | Path, out: str | Path, tokenizer: str | Path | None = None) -> int:
    """A built-in recipe's process targets (contextual: span offsets) as a JSONL file."""
    if recipe != "contextual":
        raise UsageError(f"extract: only the contextual recipe has process targets, not {recipe!r}")
    from datamill.recipes.contextual.extract import extract as _extract

    return _extract(source, out, tokenizer)


# -- the model --------------------------------------------------------------------------------


def doctor() -> dict[str, Any]:
    """CPU features, the llama.cpp build, and one short embedded generation in a child process."""
    from datamill.llm.doctor import run_doctor

    return run_doctor()


def probe_server(base_url: str, model: str, api_key: str | None = None, max_words: int = 0) -> dict[str, Any]:
    """What an OpenAI-compatible server accepts: response formats, seed, list content, context."""
    from datamill.llm.probe import probe_server as _probe

    return _probe(base_url, model, api_key, max_words)


def probe_context(
    sizes: Sequence[int] = (), base_url: str | None = None, model: str | None = None, api_key: str | None = None,
    max_words: int = 65_536,
) -> dict[str, Any]:  # fmt: skip
    """Memory per context token, the largest context that runs, and the recommended limit."""
    from datamill.llm import probe

    if base_url:
        if not model:
            raise UsageError("probe context: --base-url needs --model")
        return probe.probe_served(base_url, model, api_key, max_words)
    return probe.probe_embedded(list(sizes))
