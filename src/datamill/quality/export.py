"""Exports: a run dir's records in the shape of a profile, as JSONL or Parquet, with ``metadata.json``.

A profile (``exports:`` in the recipe) keeps some fields, renames some, and names a JSON schema
that every exported record must match; ``internal_full`` keeps every field as it is. Records
stream from the run dir's parts (through the public reader) into the export file, so memory holds
one row group, not the dataset. The file is written under a temporary name and renamed when
complete: a record that fails its schema leaves nothing behind.

Parquet fixes one type per column before the first row group is written, so a Parquet export
reads the records twice: once to infer the Arrow schema (pyarrow's JSON reader over blocks of
lines, the blocks' types merged), once to write. A field the profile's JSON schema types is
written with that type; the card's ``dataset_info.features`` are read off the same Arrow schema,
so ``datasets`` loads what the card declares. With no schema to check, the second pass hands each
row group's lines to pyarrow's JSON reader too, so no Python object is made per value.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from datamill.errors import DataError, UsageError
from datamill.recipe.model import FULL_PROFILE, ExportProfile
from datamill.store import RunDir, atomic
from datamill.store.rundir import utc_now

METADATA = "metadata.json"
METADATA_VERSION = 1  # the layout of metadata.json
FORMATS = ("jsonl", "parquet")
# Row groups are what `datasets` streaming and the Hub's viewer read one at a time: at most this
# many records, or this many bytes of JSON, whichever comes first.
ROW_GROUP_ROWS = 10_000
ROW_GROUP_BYTES = 32 << 20
INFER_CHUNK_BYTES = 8 << 20  # lines handed to pyarrow's JSON reader per schema-inference call


# -- profiles ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """A resolved export profile: which fields, under which names, checked against which schema."""

    name: str
    fields: list[str] | None = None
    rename: dict[str, str] = field(default_factory=dict)
    schema: dict[str, Any] | None = None

    @property
    def keeps_records(self) -> bool:
        """Records go out exactly as stored (no field kept back, none renamed)."""
        return self.fields is None and not self.rename

    def apply(self, rec: dict[str, Any]) -> dict[str, Any]:
        if self.fields is not None:
            return {self.rename.get(f, f): rec[f] for f in self.fields if f in rec}
        if not self.rename:
            return rec
        return {self.rename.get(k, k): v for k, v in rec.items()}

    @property
    def schema_hash(self) -> str | None:
        if self.schema is None:
            return None
        return hashlib.sha256(orjson.dumps(self.schema, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def load_profiles(recipe: dict[str, Any], base_dir: Path) -> dict[str, Profile]:
    """The recipe's export profiles (a manifest's ``recipe``), schema files read; ``internal_full`` always."""
    import jsonschema

    out: dict[str, Profile] = {}
    declared = dict(recipe.get("exports") or {})
    declared.setdefault(FULL_PROFILE, {})
    for name, raw in declared.items():
        spec = ExportProfile.model_validate(raw)
        schema = spec.schema_
        if isinstance(schema, str):
            path = base_dir / schema
            try:
                schema = orjson.loads(path.read_bytes())
            except OSError as exc:
                raise UsageError(f"exports.{name}.schema: cannot read {path}: {exc.strerror}") from None
            except orjson.JSONDecodeError as exc:
                raise UsageError(f"exports.{name}.schema: {path} is not JSON: {exc}") from None
            if not isinstance(schema, dict):
                raise UsageError(f"exports.{name}.schema: {path}: expected a JSON object (a JSON schema)")
            try:
                jsonschema.validators.validator_for(schema).check_schema(schema)
            except jsonschema.SchemaError as exc:
                raise UsageError(f"exports.{name}.schema: {path} is not a valid JSON schema: {exc.message}") from None
        out[name] = Profile(name, spec.fields, dict(spec.rename), schema)
    return out


def pick_profile(profiles: dict[str, Profile], name: str) -> Profile:
    if name not in profiles:
        raise UsageError(
            f"--profile: {name!r} is not an export profile of this recipe (profiles: {', '.join(profiles)})"
        )
    return profiles[name]


# -- records ----------------------------------------------------------------------------------


class _Shaper:
    """Applies a profile to each record and checks it against the profile's schema."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self._validator: Any = None
        self._fast: Any = None
        if profile.schema is not None:
            import jsonschema

            from datamill.quality.schemacheck import fast_check

            self._validator = jsonschema.validators.validator_for(profile.schema)(profile.schema)
            self._fast = fast_check(profile.schema)

    def __call__(self, index: int, rec: dict[str, Any]) -> dict[str, Any]:
        out = self.profile.apply(rec)
        if self.profile.fields is None and self.profile.rename and len(out) != len(rec):
            raise DataError(f"export {self.profile.name}: record {index} ({_sid(rec)}): rename gives two fields "
                            f"one name ({', '.join(sorted(set(rec) & set(self.profile.rename.values())))}); "
                            "nothing was written")  # fmt: skip
        if self._validator is None:
            return out
        if self._fast(out) if self._fast is not None else self._validator.is_valid(out):
            return out
        import jsonschema

        err = jsonschema.exceptions.best_match(self._validator.iter_errors(out))
        if err is not None:  # jsonschema has the last word, and the words
            where = "/".join(str(p) for p in err.absolute_path)
            raise DataError(
                f"export {self.profile.name}: record {index} ({_sid(rec)}) does not match the profile's schema"
                f"{' at ' + where if where else ''}: {err.message}; nothing was written"
            )
        return out


def _sid(rec: dict[str, Any]) -> str:
    sid = rec.get("sample_id")
    return f"sample_id {sid}" if sid is not None else "no sample_id"


# -- Arrow schema and Hub features ------------------------------------------------------------


def _json_type(s: Any) -> Any:
    """The Arrow type a JSON schema pins down, or None where the data must decide.

    An object becomes a struct only with ``additionalProperties: false``: otherwise records may
    carry keys the schema does not list, and a struct would drop them.
    """
    import pyarrow as pa

    if not isinstance(s, dict):
        return None
    t = s.get("type")
    if isinstance(t, list):
        kinds = [k for k in t if k != "null"]
        t = kinds[0] if len(kinds) == 1 else None
    if t is None and isinstance(s.get("enum"), list) and s["enum"]:
        values = [v for v in s["enum"] if v is not None]
        if values and all(isinstance(v, str) for v in values):
            t = "string"
        elif values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            t = "integer"
    simple = {"string": pa.string(), "integer": pa.int64(), "number": pa.float64(), "boolean": pa.bool_()}
    if t in simple:
        return simple[t]
    if t == "array":
        inner = _json_type(s.get("items"))
        return pa.list_(inner) if inner is not None else None
    if t == "object" and s.get("additionalProperties") is False and isinstance(s.get("properties"), dict):
        fields = []
        for name, sub in s["properties"].items():
            ft = _json_type(sub)
            if ft is None:
                return None
            fields.append(pa.field(name, ft))
        return pa.struct(fields) if fields else None
    return None


def _no_timestamps(t: Any) -> Any:
    """pyarrow's JSON reader reads ISO dates as timestamps; the records hold them as strings."""
    import pyarrow as pa

    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t):
        return pa.string()
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _no_timestamps(f.type)) for f in t])
    if pa.types.is_list(t):
        return pa.list_(_no_timestamps(t.value_type))
    if pa.types.is_large_list(t):
        return pa.large_list(_no_timestamps(t.value_type))
    return t


def _part_texts(run_dir: str | Path, allow_partial: bool) -> Iterator[bytes]:
    """The JSONL bytes of each committed part, in slot order, checked as the public reader checks them
    (meta, size, content hash); a JSONL part's bytes are passed on whole, not line by line."""
    from datamill.store.integrity import lines_of, read_part
    from datamill.store.reader import complete_parts

    for part in complete_parts(RunDir(run_dir), allow_partial, what="export"):
        data, meta = read_part(part)
        if part.path.name.endswith(".jsonl"):
            yield data
        else:
            yield b"".join(lines_of(part, data, meta))


def _blocks(texts: Iterable[bytes], max_rows: int, max_bytes: int) -> Iterator[tuple[bytes, int]]:
    """Whole JSONL lines in blocks of at most ``max_rows`` lines and about ``max_bytes`` bytes."""
    buf: list[bytes] = []
    rows = size = 0
    for data in texts:
        if not data:
            continue
        if not data.endswith(b"\n"):
            data += b"\n"
        n = data.count(b"\n")
        if rows + n <= max_rows and size + len(data) <= max_bytes:  # the usual case: whole parts
            buf.append(data)
            rows, size = rows + n, size + len(data)
            continue
        for line in data.splitlines(keepends=True):
            buf.append(line)
            rows, size = rows + 1, size + len(line)
            if rows >= max_rows or size >= max_bytes:
                yield b"".join(buf), rows
                buf, rows, size = [], 0, 0
    if buf:
        yield b"".join(buf), rows


def _read_json(block: bytes, schema: Any = None) -> Any:
    """A block of JSONL as an Arrow table, by pyarrow's JSON reader (one block, one thread)."""
    import pyarrow as pa
    import pyarrow.json as pj

    opts = pj.ReadOptions(block_size=len(block) + 1, use_threads=False)
    parse = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error") if schema is not None else None
    return pj.read_json(pa.BufferReader(block), read_options=opts, parse_options=parse)


def record_schema(texts: Iterable[bytes], name: str) -> Any:
    """The Arrow schema of the stored records: each block's types (pyarrow's JSON reader), merged."""
    import pyarrow as pa

    seen: list[Any] = []
    for block, _ in _blocks(texts, 1 << 62, INFER_CHUNK_BYTES):
        try:
            table = _read_json(block)
        except pa.ArrowInvalid as exc:
            raise DataError(f"export {name}: {str(exc).splitlines()[0]}: a Parquet column holds one type; "
                            "make the field one type, or export JSONL; nothing was written") from None  # fmt: skip
        seen.append(pa.schema([pa.field(f.name, _no_timestamps(f.type)) for f in table.schema]))
    try:
        return pa.unify_schemas(seen, promote_options="permissive") if seen else pa.schema([])
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"export {name}: {exc}: a Parquet column holds one type; make the field one type, "
                        "or export JSONL; nothing was written") from None  # fmt: skip


def export_schema(records: Any, profile: Profile) -> Any:
    """The Arrow schema of a profile's records: the stored records' types, fields kept and renamed,
    with the types the profile's JSON schema pins down taking precedence."""
    import pyarrow as pa

    inferred = {f.name: f.type for f in records}
    names = profile.fields if profile.fields is not None else list(inferred)
    declared = (profile.schema or {}).get("properties") or {}
    out = []
    for name in names:
        exported = profile.rename.get(name, name)
        t = _json_type(declared.get(exported))
        out.append(pa.field(exported, t if t is not None else inferred.get(name, pa.null())))
    if len(set(f.name for f in out)) != len(out):
        raise DataError(f"export {profile.name}: rename gives two fields one name; nothing was written")
    for f in out:
        if _has_empty_struct(f.type):
            raise DataError(f"export {profile.name}: field {f.name!r} holds only empty objects somewhere ({f.type}); "
                            "Parquet cannot store an object without keys: leave the field out of the profile, or "
                            "export JSONL; nothing was written")  # fmt: skip
    return pa.schema(out)


def _has_empty_struct(t: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_struct(t):
        return t.num_fields == 0 or any(_has_empty_struct(f.type) for f in t)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _has_empty_struct(t.value_type)
    return False


def _feature(t: Any) -> dict[str, Any]:
    """One Arrow type as a ``datasets`` feature in the card's YAML form (``Features._to_yaml_list``)."""
    import pyarrow as pa

    if pa.types.is_struct(t):
        return {"struct": [{"name": f.name, **_feature(f.type)} for f in t]}
    for kind, test in (("list", pa.types.is_list), ("large_list", pa.types.is_large_list)):
        if test(t):
            inner = _feature(t.value_type)
            if list(inner) == ["dtype"]:
                return {kind: inner["dtype"]}
            if list(inner) == ["struct"]:
                return {kind: inner["struct"]}
            return {kind: inner}
    names = {pa.bool_(): "bool", pa.float64(): "float64", pa.float32(): "float32", pa.null(): "null",
             pa.string(): "string", pa.large_string(): "large_string", pa.binary(): "binary"}  # fmt: skip
    if t in names:
        return {"dtype": names[t]}
    if pa.types.is_integer(t):
        return {"dtype": str(t)}  # int64, uint8, ...
    raise DataError(f"export: no Hugging Face feature for Arrow type {t}")


def hf_features(schema: Any) -> list[dict[str, Any]]:
    """The card's ``dataset_info.features`` of an Arrow schema."""
    return [{"name": f.name, **_feature(f.type)} for f in schema]


# -- writing ----------------------------------------------------------------------------------


@dataclass
class ExportedFile:
    """One export: where it is, what it holds, and the hash that goes into metadata.json."""

    path: Path
    profile: str
    format: str
    records: int
    bytes: int
    sha256: str
    fields: list[str]
    schema_hash: str | None = None
    arrow_bytes: int = 0  # in-memory size of the records as Arrow (the card's num_bytes)
    features: list[dict[str, Any]] = field(default_factory=list)
    metadata: Path | None = None  # the metadata.json written beside it

    def entry(self, base: Path) -> dict[str, Any]:
        """This file's entry in the metadata.json of folder ``base``."""
        return {
            "path": self.path.relative_to(base).as_posix(),
            "profile": self.profile,
            "format": self.format,
            "records": self.records,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "fields": self.fields,
            "schema_hash": self.schema_hash,
        }


def format_of(out: Path, fmt: str | None) -> str:
    """The export format: as given, else from the file name (.parquet, .jsonl, .jsonl.zst)."""
    name = out.name
    by_name = "parquet" if name.endswith(".parquet") else "jsonl" if name.endswith((".jsonl", ".jsonl.zst")) else None
    if fmt is None:
        if by_name is None:
            raise UsageError(f"--out: {out}: name the format with --format jsonl|parquet, or end the name in "
                             ".parquet, .jsonl or .jsonl.zst")  # fmt: skip
        return by_name
    if fmt not in FORMATS:
        raise UsageError(f"--format: expected jsonl or parquet, got {fmt!r}")
    if by_name is not None and by_name != fmt:
        raise UsageError(f"--out: {out} names a {by_name} file, but --format is {fmt}")
    return fmt


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_file(
    run_dir: str | Path, profile: Profile, fmt: str, out: str | Path, *, allow_partial: bool = False
) -> ExportedFile:
    """Write ``run_dir``'s records, shaped by ``profile``, to ``out`` (atomically)."""
    out = Path(out)
    if not out.parent.is_dir():
        raise UsageError(f"--out: {out.parent}: no such directory")
    tmp = atomic.temp_path(out)
    try:
        with open(tmp, "wb") as f:
            if fmt == "parquet":
                records, fields, arrow_bytes, features = _write_parquet(run_dir, profile, f, allow_partial)
            else:
                records, fields = _write_jsonl(run_dir, profile, f, out.name.endswith(".zst"), allow_partial)
                arrow_bytes, features = 0, []
            f.flush()
            os.fsync(f.fileno())
        atomic.publish(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportedFile(out, profile.name, fmt, records, out.stat().st_size, _sha256(out), fields,
                        profile.schema_hash, arrow_bytes, features)  # fmt: skip


def _write_jsonl(
    run_dir: str | Path, profile: Profile, f: Any, zstd: bool, allow_partial: bool
) -> tuple[int, list[str]]:
    shape = _Shaper(profile)
    sink: Any = f
    if zstd:
        import zstandard

        sink = zstandard.ZstdCompressor(level=3).stream_writer(f, closefd=False)
    raw = profile.keeps_records and profile.schema is None  # the stored bytes are the export
    names: dict[str, None] = {}
    n = 0
    for block, rows in _blocks(_part_texts(run_dir, allow_partial), ROW_GROUP_ROWS, ROW_GROUP_BYTES):
        lines = block.splitlines()
        if raw:
            for line in lines:
                names.update(dict.fromkeys(orjson.loads(line)))
            sink.write(block)
        else:
            out = []
            for i, line in enumerate(lines, n):
                rec = shape(i, orjson.loads(line))
                names.update(dict.fromkeys(rec))
                out.append(orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE))
            sink.write(b"".join(out))
        n += rows
    if zstd:
        sink.close()
    fields = profile.fields and [profile.rename.get(x, x) for x in profile.fields]
    return n, fields or list(names)


def _write_parquet(
    run_dir: str | Path, profile: Profile, f: Any, allow_partial: bool
) -> tuple[int, list[str], int, list[dict[str, Any]]]:
    """Two passes: the Arrow schema, then the row groups.

    Without a JSON schema to check, pyarrow's JSON reader parses each row group straight into
    Arrow (no Python object per value); with one, each record is checked as a dict first.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = record_schema(_part_texts(run_dir, allow_partial), profile.name)
    schema = export_schema(records, profile)
    shape = _Shaper(profile)
    writer = pq.ParquetWriter(f, schema, compression="zstd")
    n = arrow_bytes = 0
    try:
        for block, rows in _blocks(_part_texts(run_dir, allow_partial), ROW_GROUP_ROWS, ROW_GROUP_BYTES):
            if profile.schema is None:
                try:
                    table = _shape_table(_read_json(block, records), profile, schema)
                except pa.ArrowInvalid as exc:
                    raise DataError(f"export {profile.name}: records {n}..{n + rows - 1}: {str(exc).splitlines()[0]}; "
                                    "nothing was written") from None  # fmt: skip
            else:
                batch = [shape(i, orjson.loads(line)) for i, line in enumerate(block.splitlines(), n)]
                try:
                    table = pa.Table.from_pylist(batch, schema=schema)
                except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
                    raise _convert_error(profile, schema, batch, n, exc) from None
            writer.write_table(table, row_group_size=max(1, table.num_rows))
            arrow_bytes += table.nbytes
            n += rows
        if n == 0:
            writer.write_table(schema.empty_table())
    finally:
        writer.close()
    return n, schema.names, arrow_bytes, hf_features(schema)


def _shape_table(table: Any, profile: Profile, schema: Any) -> Any:
    """A profile applied to a table of stored records: fields picked (nulls where none had it), renamed."""
    import pyarrow as pa

    cols = []
    for field_ in schema:
        source = next((k for k, v in profile.rename.items() if v == field_.name), field_.name)
        i = table.schema.get_field_index(source)
        cols.append(table.column(i) if i >= 0 else pa.nulls(table.num_rows, field_.type))
    return pa.Table.from_arrays(cols, schema=schema)


def _convert_error(profile: Profile, schema: Any, batch: list[dict[str, Any]], first: int, exc: Exception) -> DataError:
    """Name the record (and field) a row group could not be converted for."""
    import pyarrow as pa

    for i, rec in enumerate(batch):
        for f in schema:
            try:
                pa.array([rec.get(f.name)], type=f.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as inner:
                return DataError(f"export {profile.name}: record {first + i} ({_sid(rec)}): field {f.name!r} "
                                 f"does not fit Parquet type {f.type}: {inner}; nothing was written")  # fmt: skip
    return DataError(f"export {profile.name}: records {first}..{first + len(batch) - 1}: {exc}; nothing was written")


# -- metadata ---------------------------------------------------------------------------------


def model_identities(run_dir: str | Path, recipe: dict[str, Any]) -> list[dict[str, Any]]:
    """The models that wrote the records: per column, backend, model, provider and attempts.

    Attempts come from ``logs/attempts.jsonl``; the provider is the host of the model block's
    ``base_url`` (never its path, query or credentials), or the embedded llama.cpp backend.
    """
    from datamill.llm.telemetry import read_attempts

    rd = RunDir(run_dir)
    counts: Counter[tuple[str, str, str]] = Counter()
    for row in read_attempts(rd.logs_dir / "attempts.jsonl"):
        if row.get("status") == "step_down":
            continue
        counts[(str(row.get("column")), str(row.get("backend")), str(row.get("model")))] += 1
    specs = _model_specs(recipe)
    out: list[dict[str, Any]] = []
    for (column, backend, model), n in sorted(counts.items()):
        provider = _provider(backend, (specs.get(column) or {}).get("base_url"))
        out.append({"column": column, "backend": backend, "model": model, "provider": provider, "attempts": n})
    asked = {m["column"] for m in out}
    for column, spec in specs.items():  # declared but never asked (every slot failed before it)
        if column not in asked:
            backend = spec.get("backend") or "embedded"
            provider = _provider(backend, spec.get("base_url"))
            out.append({"column": column, "backend": backend, "model": spec.get("model"), "provider": provider,
                        "attempts": 0})  # fmt: skip
    return out


def _model_specs(recipe: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Column -> the model block it uses (the recipe's, with the column's override on top)."""
    base = dict(recipe.get("model") or {})
    out: dict[str, dict[str, Any]] = {}
    for name, col in (recipe.get("columns") or {}).items():
        for kind in ("llm", "judge"):
            if isinstance(col.get(kind), dict):
                out[name] = {**base, **{k: v for k, v in (col[kind].get("model") or {}).items() if v is not None}}
                break
    if recipe.get("planner"):
        out["planner"] = {**base, **(recipe["planner"].get("model") or {})}
    return out


def _provider(backend: str, base_url: str | None) -> str:
    if backend == "embedded":
        return "embedded (llama.cpp)"
    if base_url:
        parts = urlsplit(base_url)
        host = parts.hostname or ""
        return f"{host}:{parts.port}" if parts.port else host
    return backend


def metadata_doc(
    manifest: dict[str, Any], files: list[ExportedFile], base: Path, models: list[dict[str, Any]]
) -> dict[str, Any]:
    """metadata.json of folder ``base``: what made the exported files in it, and their hashes."""
    recipe = manifest["recipe"]
    return {
        "schema_version": METADATA_VERSION,
        "generator": {"name": "datamill", "version": manifest.get("datamill_version")},
        "recipe": {"name": manifest["recipe_name"], "version": recipe.get("version"), "hash": manifest["recipe_hash"]},
        "seed": recipe.get("seed"),
        "models": models,
        "records": files[0].records if files else 0,  # every profile keeps every record
        "created": utc_now(),
        "files": [f.entry(base) for f in sorted(files, key=lambda f: f.path.relative_to(base).as_posix())],
    }


def write_metadata(
    folder: Path, manifest: dict[str, Any], new: list[ExportedFile], models: list[dict[str, Any]]
) -> Path:
    """Write ``folder/metadata.json`` for ``new`` files, keeping the entries of earlier exports of
    the same run that are still there (several profiles exported into one folder)."""
    import fcntl

    path = folder / METADATA
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # two exports into one folder: one metadata.json holding both
        check_metadata_target(folder, manifest)
        doc = metadata_doc(manifest, new, folder, models)
        if path.is_file():
            old = orjson.loads(path.read_bytes())
            paths = {e["path"] for e in doc["files"]}
            kept = [e for e in old.get("files") or [] if e["path"] not in paths and (folder / e["path"]).is_file()]
            doc["files"] = sorted(kept + doc["files"], key=lambda e: e["path"])
        atomic.write_bytes(path, orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    finally:
        os.close(fd)
    return path


def check_metadata_target(folder: Path, manifest: dict[str, Any]) -> None:
    """Refuse before writing an export whose metadata.json could not be written beside it."""
    path = folder / METADATA
    if not path.is_file():
        return
    try:
        old = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError:
        old = None
    if not isinstance(old, dict) or (old.get("generator") or {}).get("name") != "datamill":
        raise UsageError(f"--out: {path} exists and was not written by datamill; export into another folder")
    if (old.get("recipe") or {}).get("hash") != manifest["recipe_hash"]:
        raise UsageError(f"--out: {path} describes another dataset ({old['recipe'].get('name')}, recipe hash "
                         f"{old['recipe'].get('hash')}); export into another folder")  # fmt: skip
