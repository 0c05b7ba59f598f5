"""The dataset card (``README.md`` of a release): Hub metadata up front, then how the data was made.

Everything in it is read off the run: the recipe in the manifest, the models in the attempt log,
the verify report and gate results, the golden regression, the exported files and their features.
Nothing is boilerplate a user has to fill in; what the recipe's ``release:`` block says
(description, license, limitations) is added to what was measured.
"""

from __future__ import annotations

import io
from typing import Any

SIZE_CATEGORIES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"),
    (100_000_000_000, "10B<n<100B"),
    (1_000_000_000_000, "100B<n<1T"),
]


def size_category(n: int) -> str:
    """The Hub's size category of ``n`` records."""
    for bound, name in SIZE_CATEGORIES:
        if n < bound:
            return name
    return "n>1T"


def front_matter(release: Any, name: str, configs: list[dict[str, Any]], records: int) -> dict[str, Any]:
    """The card's YAML metadata: license, languages, tasks, size, ``configs`` and ``dataset_info``.

    ``configs`` items: ``name``, ``path`` (in the folder), ``features`` (YAML form), ``num_bytes``,
    ``bytes`` (the file), ``records``.
    """
    meta: dict[str, Any] = {
        "license": release.license,
        "language": list(release.language),
        "task_categories": list(release.task_categories),
        "size_categories": [size_category(records)],
        "pretty_name": release.pretty_name or name,
        "tags": list(dict.fromkeys(["synthetic", "datamill", *release.tags])),
        "configs": [],
        "dataset_info": [],
    }
    for i, c in enumerate(configs):
        entry: dict[str, Any] = {"config_name": c["name"], "data_files": [{"split": "train", "path": c["path"]}]}
        if i == 0:
            entry["default"] = True
        meta["configs"].append(entry)
        meta["dataset_info"].append(
            {
                "config_name": c["name"],
                "features": c["features"],
                "splits": [{"name": "train", "num_bytes": c["num_bytes"], "num_examples": c["records"]}],
                "download_size": c["bytes"],
                "dataset_size": c["num_bytes"],
            }
        )
    return meta


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table(head: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _short(text: str, n: int = 90) -> str:
    text = " ".join(str(text).split()).replace("`", "'")  # shown in a code span
    return text if len(text) <= n else text[: n - 1] + "…"


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _column_how(col: dict[str, Any], recipe: dict[str, Any]) -> tuple[str, str]:
    sampler = col.get("sampler")
    if sampler == "categorical":
        pairs = zip(col["values"], col.get("weights") or [1] * len(col["values"]), strict=False)
        return "categorical sampler", ", ".join(f"{v} ({_num(w)})" for v, w in pairs)
    if sampler == "integer":
        return "integer sampler", f"uniform in [{col['low']}, {col['high']}]"
    if sampler == "uniform":
        return "uniform sampler", f"uniform in [{col['low']}, {col['high']})"
    if sampler == "conditional":
        return "conditional sampler", f"weights by the value of {col['on']}"
    if sampler:
        rest = ", ".join(f"{k}: {v}" for k, v in col.items() if k not in ("emit", "sampler"))
        return f"{sampler} sampler", _short(rest)
    if "expr" in col:
        return "expression", f"`{_short(col['expr'])}`"
    if "template" in col:
        return "template", f"`{_short(col['template'])}`"
    if "generator" in col:
        return "generator", f"`{col['generator']}` (code shipped with the recipe)"
    if "judge" in col:
        j = col["judge"]
        return "LLM judge", f"score on {j.get('scale')}: {_short(j.get('rubric', ''), 70)}"
    if "llm" in col:
        llm = col["llm"]
        shape = "JSON matching a schema" if llm.get("schema") or llm.get("schema_") else "text"
        return "LLM", (f"{shape} from `{_short(llm.get('prompt', ''), 60)}`; temperature {llm.get('temperature')}, "
                       f"max_tokens {llm.get('max_tokens')}")  # fmt: skip
    if "validate" in col:
        return "validator", f"{col['validate']} check of {col.get('field')}"
    return "column", ""


def render(
    *,
    manifest: dict[str, Any],
    release: Any,
    configs: list[dict[str, Any]],
    records: int,
    verify: dict[str, Any],
    golden: dict[str, Any] | None,
    models: list[dict[str, Any]],
    telemetry: dict[str, Any] | None,
    dedup: dict[str, Any] | None,
    repo_id: str | None,
    files: list[str],
) -> str:
    """The whole README.md."""
    from ruamel.yaml import YAML

    recipe = manifest["recipe"]
    name = manifest["recipe_name"]
    meta = front_matter(release, name, configs, records)
    buf = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    yaml.dump(meta, buf)
    out = ["---", buf.getvalue().rstrip(), "---", ""]
    add = out.append

    title = release.pretty_name or name
    add(f"# {title}\n")
    add((release.description.strip() + "\n") if release.description else
        f"A synthetic dataset of {records:,} records, made by [datamill](https://pypi.org/project/datamill/) from "
        f"the recipe `{name}`.\n")  # fmt: skip
    default = configs[0]["name"] if configs else None
    add(_table(["", ""], [
        ["records", f"{records:,}"],
        ["configs", ", ".join(c["name"] + (" (default)" if c["name"] == default else "") for c in configs)],
        ["recipe", f"{name}, version {recipe.get('version')}, hash {manifest['recipe_hash']}"],
        ["seed", recipe.get("seed")],
        ["generator", f"datamill {manifest.get('datamill_version')}"],
        ["license", release.license],
    ]))  # fmt: skip
    add("")

    # -- how it was made
    add("## How the data was made\n")
    plan = manifest.get("plan") or {}
    again = ("Every record is a pure function of the recipe and its seed: `datamill run recipe.yaml --out RUN` makes "
             "the same records again, byte for byte, whatever the number of workers or shards.") if not models else (
             "Every record is a pure function of the recipe, its seed and the model responses, which the run's cache "
             "keeps (it is not part of this release): with that cache, `datamill run recipe.yaml --out RUN` makes the "
             "same records again, byte for byte, whatever the number of workers or shards.")  # fmt: skip
    add(f"The recipe `{name}` (in this folder as `recipe.yaml`) planned {_num(plan.get('slots', 0))} slots with seed "
        f"{recipe.get('seed')}, in parts of {_num(plan.get('part_size', 0))}; the release holds {records:,} records. "
        f"{again}\n")  # fmt: skip
    if recipe.get("source"):
        add(f"Each slot maps one row of an existing file (`source: {recipe['source'].get('format')}`, keyed by "
            f"`{recipe['source'].get('key')}`); its columns are kept unchanged.\n")  # fmt: skip
    cols = []
    for cname, col in (recipe.get("columns") or {}).items():
        kind, how = _column_how(col, recipe)
        cols.append([cname + ("" if col.get("emit", True) else " (helper, not in records)"), kind, how])
    add(_table(["column", "kind", "how"], cols))
    add("")
    if recipe.get("quotas"):
        quotas = "; ".join(f"{k}: " + (v if isinstance(v, str) else ", ".join(f"{a} {_num(b)}" for a, b in v.items()))
                           for k, v in recipe["quotas"].items())  # fmt: skip
        add(f"Quotas (exact counts per value, largest remainder): {quotas}.\n")
    if recipe.get("cycles"):
        add("Cycles: " + "; ".join(f"{k} over {len(v)} values" for k, v in recipe["cycles"].items()) + ".\n")
    add("### Models\n")
    if models:
        rows = [[m["column"], m["backend"], m["model"], m["provider"], _num(m["attempts"])] for m in models]
        add(_table(["column", "backend", "model", "provider", "attempts"], rows))
        add("")
    else:
        add("No language model: every field was computed by code from the seed.\n")
    if dedup:
        methods = dedup.get("method")
        methods = ", ".join(methods) if isinstance(methods, list) else methods
        rounds = [r.get("rejected", r) if isinstance(r, dict) else r for r in dedup.get("rounds") or []]
        left = len(dedup.get("left_rejected") or [])
        add(f"Deduplication: {methods} (threshold {dedup.get('threshold')}), {len(rounds)} round(s); rejected "
            f"slots were regenerated at the next attempt seed; {left} left out.\n")  # fmt: skip

    # -- configs
    add("## Configs\n")
    for c in configs:
        schema = f"; every record matched the profile's JSON schema (hash {c['schema_hash']})" if c.get(
            "schema_hash") else ""  # fmt: skip
        add(f"### {c['name']}{' (default)' if c['name'] == default else ''}\n")
        add(f"`{c['path']}`: {c['records']:,} records, {c['bytes']:,} bytes (Parquet, zstd), sha256 "
            f"`{c['sha256']}`{schema}.\n")  # fmt: skip
        add(_table(["field", "type"], [[f["name"], _type_name(f)] for f in c["features"]]))
        add("")

    # -- quality
    s = verify["summary"]
    add("## Quality\n")
    add(f"Measured by `datamill verify` over all {verify['header']['num_items']:,} records "
        "(`reports/verify.json`; `reports/report.html` draws the same numbers).\n")  # fmt: skip
    add("### Gates\n")
    gates = s.get("gates") or []
    if gates:
        rows = []
        for g in gates:
            bound = " ".join(x for x in (f"min {g['min']:g}" if g.get("min") is not None else "",
                                         f"max {g['max']:g}" if g.get("max") is not None else "") if x)  # fmt: skip
            verdict = "PASS" if g["passed"] else ("FAIL" if g["severity"] == "fail" else "WARN")
            rows.append([g["metric"], _num(g["value"]), bound, g["severity"], verdict])
        add(_table(["metric", "value", "bound", "severity", "result"], rows))
        add("")
    else:
        add("The recipe declares no gates.\n")
    dup = s.get("duplicate_sample_id_count", 0)
    add(f"Duplicate sample_ids: {dup} (always a blocking failure).\n")
    add("### Golden regression\n")
    if golden and golden.get("rows") is not None:
        rows = golden["rows"]
        ok = sum(1 for r in rows if r["passed"])
        add(f"{ok} of {len(rows)} metrics within tolerance of the baseline, on {golden['current']['slots']:,} fixed, "
            "balanced golden slots regenerated for this release.\n")  # fmt: skip
        shown = [r for r in rows if not r["passed"]] + [r for r in rows if r["passed"]]
        add(_table(["metric", "baseline", "current", "tolerance", "result"],
                   [[r["metric"], _num(r["baseline"]), _num(r["current"]),
                     f"±{r['tolerance']:g}" if r["kind"] == "abs" else f"±{r['tolerance']:.0%}",
                     "PASS" if r["passed"] else "FAIL"] for r in shown[:40]]))  # fmt: skip
        if len(shown) > 40:
            add(f"\n({len(shown) - 40} more in `reports/golden.json`.)")
        add("")
    else:
        add("No golden regression was run for this release.\n")
    fields = s.get("fields") or {}
    if fields:
        add("### Field lengths\n")
        rows = []
        for fname, st in fields.items():
            c, t = st["chars"], st.get("tokens")
            rows.append([fname, f"{c['p10']} / {c['p50']} / {c['p90']} / {c['max']}",
                         f"{t['p10']} / {t['p50']} / {t['p90']} / {t['max']}" if t else "not counted"])  # fmt: skip
        add(_table(["field", "characters p10 / p50 / p90 / max", "tokens p10 / p50 / p90 / max"], rows))
        add("")
    hist = s.get("histograms") or {}
    if hist:
        add("### Categories\n")
        rows = []
        for hname, counts in hist.items():
            total = sum(counts.values()) or 1
            top = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
            text = ", ".join(f"{k} {v:,} ({v / total:.0%})" for k, v in top[:10])
            rows.append([hname, text + (f", and {len(top) - 10} more" if len(top) > 10 else "")])
        add(_table(["field", "values"], rows))
        add("")
    collapse = s.get("collapse") or {}
    metrics = s.get("metrics") or {}
    if collapse:
        add("### Collapse indicators\n")
        add(_table(["indicator", "value", "band"], [[k, _num(metrics.get(k)), v] for k, v in collapse.items()]))
        add("")
    if telemetry:
        counts = telemetry.get("counts") or {}
        repairs = sum((telemetry.get("repairs") or {}).values())
        add("### Model calls\n")
        add(f"{telemetry.get('attempts', 0):,} attempts: {counts.get('success', 0):,} answered, "
            f"{counts.get('failed', 0):,} failed, {counts.get('retry', 0):,} retried, {repairs:,} repairs; "
            f"{telemetry.get('prompt_tokens', 0):,} prompt and {telemetry.get('completion_tokens', 0):,} completion "
            f"tokens; cost ${telemetry.get('cost_usd', 0):.4f}.\n")  # fmt: skip

    # -- limitations
    add("## Known limitations\n")
    for item in limitations(recipe, release, s, golden, models, telemetry, dedup):
        add(f"- {item}")
    add("")

    # -- loading
    add("## Loading\n")
    where = repo_id or "path/to/this/folder"
    add("```python\nfrom datasets import load_dataset\n")
    for c in configs:
        add(f'ds = load_dataset("{where}", "{c["name"]}", split="train")')
    if configs:
        add(f'stream = load_dataset("{where}", "{configs[0]["name"]}", split="train", streaming=True)  '
            "# a row group at a time")  # fmt: skip
    add("```\n")
    add('Or with datamill: `datamill.read("' + (configs[0]["path"] if configs else "data") + '")`.\n')
    add("## Files\n")
    add(_table(["file", "what"], [[f, _what(f)] for f in files]))
    add("")
    return "\n".join(out)


def _type_name(f: dict[str, Any]) -> str:
    if "dtype" in f:
        return str(f["dtype"])
    if "struct" in f:
        return "struct {" + ", ".join(g["name"] + ": " + _type_name(g) for g in f["struct"]) + "}"
    for kind in ("list", "large_list"):
        if kind in f:
            inner = f[kind]
            if isinstance(inner, str):
                return f"list of {inner}"
            if isinstance(inner, list):
                return "list of " + _type_name({"struct": inner})
            return "list of " + _type_name(inner)
    return str(f)


def _what(path: str) -> str:
    if path == "README.md":
        return "this card"
    if path == "metadata.json":
        return "generator, recipe, seed, models, record count, creation date, sha256 of every data file"
    if path == "recipe.yaml":
        return "the recipe as run"
    if path.endswith("verify.json"):
        return "the verify report: lengths, tokens, categories, quotas, metrics, gates"
    if path.endswith("report.html"):
        return "the HTML report (self-contained, no network)"
    if path.endswith("golden.json"):
        return "the golden regression: every metric against its baseline"
    if path.endswith(".parquet"):
        return "records of one config"
    return ""


def limitations(
    recipe: dict[str, Any],
    release: Any,
    summary: dict[str, Any],
    golden: dict[str, Any] | None,
    models: list[dict[str, Any]],
    telemetry: dict[str, Any] | None,
    dedup: dict[str, Any] | None,
) -> list[str]:
    """What a user of the data should know, measured first, then what the recipe declares."""
    out = ["Synthetic: values follow the distributions the recipe declares (weights, quotas, templates), not "
           "frequencies observed in the world."]  # fmt: skip
    for g in summary.get("gates") or []:
        if not g["passed"] and g["severity"] == "warn":
            out.append(f"Warn gate {g['metric']} = {_num(g['value'])} is out of bounds"
                       f"{': ' + g['reason'] if g.get('reason') else ''}.")  # fmt: skip
    metrics = summary.get("metrics") or {}
    for k, band in (summary.get("collapse") or {}).items():
        if band != "healthy":
            out.append(f"Collapse indicator {k} = {_num(metrics.get(k))} is {band}: the text repeats itself more "
                       "than varied data would.")  # fmt: skip
    if models:
        names = ", ".join(sorted({f"{m['model']} ({m['provider']})" for m in models}))
        out.append(f"Text written by {names}: it can be fluent and wrong; no check here goes beyond the gates above.")
    if telemetry:
        counts = telemetry.get("counts") or {}
        if counts.get("failed"):
            out.append(f"{counts['failed']:,} model attempts failed for good; their slots hold no record.")
        repairs = sum((telemetry.get("repairs") or {}).values())
        if repairs:
            out.append(f"{repairs:,} model answers were repaired (JSON fixes) before they parsed.")
    if dedup and dedup.get("left_rejected"):
        out.append(f"{len(dedup['left_rejected']):,} slots were still duplicates after the last dedup round and "
                   "are left out.")  # fmt: skip
    if not golden or golden.get("rows") is None:
        out.append("No golden regression was run: nothing compares this release with an earlier one.")
    out.extend(release.limitations)
    return out
