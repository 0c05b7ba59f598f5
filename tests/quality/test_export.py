"""Export internals: the fast schema check agrees with jsonschema; card features match `datasets`' own."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from datamill.quality.export import hf_features
from datamill.quality.schemacheck import compile_schema, fast_check

KEYS = ["a", "b", "c", "d"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(-5, 5, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, 1.0, 2.0, -1.0]),  # integral floats: an "integer" in drafts 6+
    st.text(alphabet="ab1 ", max_size=4),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    max_leaves=12,
)
TYPE_NAMES = ["string", "integer", "number", "boolean", "null", "array", "object"]
# Values where JSON Schema and Python disagree (true == 1, 1 == 1.0) or keywords meet their edges.
TRICKY = [1, 1.0, 1.5, True, 0, 0.0, False, None, "", "a", "ab1", [], [1, 1.0], {}, {"a": 1}, {"a": True, "e": 0}]


@st.composite
def schemas(draw: Any, depth: int = 2) -> Any:
    if draw(st.integers(0, 12)) == 0:
        return draw(st.booleans())
    s: dict[str, Any] = {}
    keys = draw(st.sets(st.sampled_from([
        "type", "types", "enum", "const", "required", "properties", "additionalProperties", "items", "minLength",
        "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems", "pattern",
        "minProperties", "maxProperties", "title", "format"]), max_size=4))  # fmt: skip
    for k in sorted(keys):
        if k == "type":
            s["type"] = draw(st.sampled_from(TYPE_NAMES))
        elif k == "types":
            s["type"] = draw(st.lists(st.sampled_from(TYPE_NAMES), min_size=1, max_size=3, unique=True))
        elif k == "enum":
            s["enum"] = draw(st.lists(values, min_size=1, max_size=4))
        elif k == "const":
            s["const"] = draw(values)
        elif k == "required":
            s["required"] = draw(st.lists(st.sampled_from(KEYS), max_size=3, unique=True))
        elif k in ("properties", "additionalProperties", "items") and depth > 0:
            if k == "properties":
                s[k] = draw(st.dictionaries(st.sampled_from(KEYS), schemas(depth - 1), max_size=3))
            else:
                s[k] = draw(schemas(depth - 1))
        elif k in ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"):
            s[k] = draw(st.integers(0, 4))
        elif k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            s[k] = draw(st.integers(-3, 3) | st.floats(-3, 3, allow_nan=False))
        elif k == "pattern":
            s[k] = draw(st.sampled_from(["^a", "b$", "[0-9]", "^$", "a+b"]))
        elif k == "title":
            s[k] = "x"
        elif k == "format":
            s[k] = draw(st.sampled_from(["date", "email"]))  # an annotation: never asserted
    return s


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schemas(), st.lists(values, min_size=1, max_size=6))
@example({"properties": {"a": {"type": "integer"}}, "additionalProperties": False}, [{"a": 1}, {"a": 1, "b": 2}])
@example({"properties": {"a": {}}, "additionalProperties": {"type": "string"}}, [{"a": 1, "b": "x"}, {"b": 1}])
@example({"enum": [1.5, [1, {"a": 2.5}]]}, [1.5, [1.0, {"a": 2.5}], [True, {"a": 2.5}]])
@example({"exclusiveMinimum": 1, "exclusiveMaximum": 2.5, "minimum": 1}, [1, 1.0, 2.5, 2])
def test_the_fast_check_agrees_with_jsonschema(schema: Any, instances: list[Any]) -> None:
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError:
        assume(False)
    check = compile_schema(schema)
    assert check is not None  # every keyword drawn is in the subset
    validator = jsonschema.Draft202012Validator(schema)
    for v in instances + TRICKY + [{"a": v, "b": [v]} for v in TRICKY]:
        assert check(v) == validator.is_valid(v), (schema, v)


def test_the_fast_check_leaves_other_schemas_to_jsonschema() -> None:
    assert compile_schema({"anyOf": [{"type": "string"}]}) is None
    assert compile_schema({"properties": {"a": {"$ref": "#/$defs/x"}}, "$defs": {"x": {}}}) is None
    assert compile_schema({"type": "array", "items": [{"type": "string"}]}) is None  # tuple form (draft 7)
    assert compile_schema({"patternProperties": {"^a": {}}}) is None
    draft4 = {"$schema": "http://json-schema.org/draft-04/schema#", "type": "integer"}
    assert fast_check(draft4) is None  # draft 4: 1.0 is no integer; jsonschema decides
    assert fast_check({"type": "integer"}) is not None


def test_card_features_are_what_datasets_writes_for_the_same_arrow_schema() -> None:
    datasets = pytest.importorskip("datasets")
    import pyarrow as pa

    schema = pa.schema(
        [
            ("sample_id", pa.string()),
            ("n", pa.int64()),
            ("x", pa.float64()),
            ("ok", pa.bool_()),
            ("nothing", pa.null()),
            ("tags", pa.list_(pa.string())),
            ("grid", pa.list_(pa.list_(pa.int64()))),
            ("judge", pa.struct([("score", pa.int64()), ("reason", pa.string())])),
            ("turns", pa.list_(pa.struct([("role", pa.string()), ("text", pa.string())]))),
            ("deep", pa.struct([("inner", pa.struct([("v", pa.list_(pa.float64()))]))])),
        ]
    )
    assert hf_features(schema) == datasets.Features.from_arrow_schema(schema)._to_yaml_list()


def test_row_groups_are_bounded_by_rows_and_bytes_whatever_the_part_size(tmp_path: Any, monkeypatch: Any) -> None:
    import pyarrow.parquet as pq

    import datamill
    from datamill.quality import export as ex

    recipe = {
        "name": "rg",
        "seed": 2,
        "size": 60,
        "columns": {"n": {"sampler": "integer", "low": 1, "high": 9}, "text": {"template": "item {{ slot }} {{ n }}"}},
        "exports": {"checked": {"fields": ["sample_id", "text"], "schema": {"type": "object", "required": ["text"]}}},
        "output": {"part_size": 25},
    }
    run_dir = tmp_path / "run"
    datamill.run(recipe, run_dir, workers=1, progress=False)
    records = datamill.read(run_dir).to_list()
    for rows, nbytes, groups in ((7, 1 << 20, 9), (10_000, 200, None)):
        monkeypatch.setattr(ex, "ROW_GROUP_ROWS", rows)
        monkeypatch.setattr(ex, "ROW_GROUP_BYTES", nbytes)
        for profile in ("internal_full", "checked"):
            out = tmp_path / f"{profile}-{rows}.parquet"
            datamill.export(run_dir, out, profile=profile)
            meta = pq.ParquetFile(out).metadata
            sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            assert sum(sizes) == 60 and max(sizes) <= min(rows, 10)  # 200 bytes hold at most ~8 records
            if groups is not None:
                assert len(sizes) == groups  # 60 records over parts of 25, in groups of 7
            want = records if profile == "internal_full" else [{"sample_id": r["sample_id"], "text": r["text"]}
                                                               for r in records]  # fmt: skip
            assert pq.read_table(out).to_pylist() == want


def test_exports_are_the_same_whatever_the_part_format(tmp_path: Any) -> None:
    import io

    import zstandard

    import datamill

    base = {
        "name": "pf",
        "seed": 4,
        "size": 30,
        "columns": {
            "n": {"sampler": "integer", "low": 1, "high": 9},
            "pair": {"expr": "[n, n * 2]"},
            "text": {"template": "item {{ slot }}"},
        },
    }
    outs = {}
    for fmt, comp in (("jsonl", "none"), ("jsonl", "zstd"), ("parquet", "zstd")):
        run_dir = tmp_path / f"{fmt}-{comp}"
        datamill.run({**base, "output": {"format": fmt, "compression": comp, "part_size": 8}}, run_dir, workers=1,
                     progress=False)  # fmt: skip
        (tmp_path / fmt / comp).mkdir(parents=True)
        pq_out = datamill.export(run_dir, tmp_path / fmt / comp / "x.parquet")
        zst_out = datamill.export(run_dir, tmp_path / fmt / comp / "x.jsonl.zst")
        outs[(fmt, comp)] = (pq_out.sha256, zstandard.ZstdDecompressor().decompressobj().decompress(
            zst_out.path.read_bytes()))  # fmt: skip
    assert len(set(outs.values())) == 1  # same Parquet bytes, same JSONL records
    stored = io.BytesIO()
    datamill.cat(tmp_path / "jsonl-none", stored)
    assert outs[("jsonl", "none")][1] == stored.getvalue()  # internal_full JSONL is the records as stored
