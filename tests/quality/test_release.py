"""Release: gates and golden regression block it; the folder loads in `datasets`; --push keeps the token secret."""

from __future__ import annotations

import base64
import gzip
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from helpers import ScriptedServer, cli_env

RECIPE = """
name: shop
version: 2
seed: 11
size: 120
params: {adj: bright}
columns:
  region: {sampler: categorical, values: {north: 3, south: 1}}
  age: {sampler: categorical, values: [young, mid, old]}
  n: {sampler: integer, low: 1, high: 9}
  price: {sampler: uniform, low: 1, high: 50}
  text: {template: "A {{ params.adj }} {{ age }} shopper from the {{ region }} buys {{ n }} things."}
gates:
  - {metric: tokens.text.p90, max: 1000, severity: fail}
  - {metric: uniqueness.region, min: 0.9, severity: warn}
exports:
  schema_compat:
    fields: [sample_id, text, n, region]
    rename: {text: prompt}
    schema:
      type: object
      required: [sample_id, prompt, n, region]
      properties:
        sample_id: {type: string}
        prompt: {type: string}
        n: {type: integer}
        region: {enum: [north, south]}
  extended:
    fields: [sample_id, text, n, region, age, price]
release:
  license: cc-by-4.0
  task_categories: [text-generation, question-answering]
  language: [en]
  description: Shoppers and what they buy, for testing releases.
  limitations: ["Prices are uniform, not what shops charge."]
output: {part_size: 40}
"""

CONFIGS = ["schema_compat", "extended", "internal_full"]


def _run(run_cli, tmp_path: Path, text: str = RECIPE, *flags: str, name: str = "run") -> Path:
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(text)
    out = tmp_path / name
    res = run_cli("run", str(recipe), "--out", str(out), *flags)
    assert res.returncode == 0, res.stderr
    return out


def _records(run_cli, run_dir: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in run_cli("cat", str(run_dir)).stdout.splitlines()]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _offline_env(tmp_path: Path) -> dict[str, str]:
    env = cli_env()
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    env.pop("HF_ENDPOINT", None)
    return env


LOAD_SCRIPT = """
import sys, orjson, datasets
rel, names = sys.argv[1], sys.argv[2].split(",")
out = {}
for name in names:
    ds = datasets.load_dataset(rel, name, split="train")
    out[name] = {"features": ds.features.to_dict(), "rows": ds.to_list()}
sys.stdout.buffer.write(orjson.dumps(out))
"""


def test_release_folder_loads_offline_in_datasets_with_the_declared_features(run_cli, tmp_path: Path) -> None:
    import datasets
    import huggingface_hub
    import pyarrow.parquet as pq

    run_dir = _run(run_cli, tmp_path)
    rel = tmp_path / "rel"
    res = run_cli("release", str(run_dir), "--out", str(rel))
    assert res.returncode == 0, res.stdout + res.stderr
    assert sorted(_files(rel)) == sorted(
        ["README.md", "metadata.json", "recipe.yaml", "reports/verify.json", "reports/report.html"]
        + [f"data/{c}/train-00000-of-00001.parquet" for c in CONFIGS]
    )
    # The card's metadata, through huggingface_hub's own parser.
    card = huggingface_hub.DatasetCard.load(rel / "README.md")
    data = card.data
    assert isinstance(data, huggingface_hub.repocard_data.DatasetCardData)
    assert data.license == "cc-by-4.0" and data.language == ["en"] and data.size_categories == ["n<1K"]
    assert data.task_categories == ["text-generation", "question-answering"]
    assert [c["config_name"] for c in data.configs] == CONFIGS and data.configs[0]["default"] is True
    infos = {i["config_name"]: i for i in data.dataset_info}
    assert list(infos) == CONFIGS
    # Each config's declared features are the Parquet file's own schema, as `datasets` writes it.
    for c in CONFIGS:
        schema = pq.read_schema(rel / "data" / c / "train-00000-of-00001.parquet")
        assert infos[c]["features"] == datasets.Features.from_arrow_schema(schema)._to_yaml_list()
        assert infos[c]["splits"] == [{"name": "train", "num_bytes": infos[c]["splits"][0]["num_bytes"],
                                       "num_examples": 120}]  # fmt: skip
    assert [f["name"] for f in infos["schema_compat"]["features"]] == ["sample_id", "prompt", "n", "region"]
    # The real `datasets`, offline, loads every config with exactly those features.
    proc = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(rel), ",".join(CONFIGS)], capture_output=True,
                          env=_offline_env(tmp_path), timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    loaded = orjson.loads(proc.stdout)
    records = _records(run_cli, run_dir)
    for c in CONFIGS:
        declared = datasets.Features._from_yaml_list(infos[c]["features"]).to_dict()
        assert loaded[c]["features"] == declared, c
    assert loaded["internal_full"]["rows"] == records
    assert loaded["schema_compat"]["rows"] == [
        {"sample_id": r["sample_id"], "prompt": r["text"], "n": r["n"], "region": r["region"]} for r in records
    ]
    assert [list(r) for r in loaded["extended"]["rows"][:1]] == [["sample_id", "text", "n", "region", "age", "price"]]
    # The card says how the data was made and how it measured up.
    text = (rel / "README.md").read_text()
    for needle in ("Shoppers and what they buy", "seed 11",
                   "| region | categorical sampler | north (3), south (1) |", "| tokens.text.p90 |",
                   "| uniqueness.region |", "WARN", "Warn gate uniqueness.region", "No golden regression",
                   "Prices are uniform, not what shops charge.", 'load_dataset("path/to/this/folder", "extended"',
                   "No language model"):  # fmt: skip
        assert needle in text, needle
    meta = orjson.loads((rel / "metadata.json").read_bytes())
    manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
    assert f"hash {manifest['recipe_hash']}" in text and meta["recipe"]["hash"] == manifest["recipe_hash"]
    # No local path of this machine in what would be uploaded.
    for name, body in _files(rel).items():
        assert str(tmp_path).encode() not in body, name


def test_round_trip_jsonl_parquet_datasets_keeps_every_value_and_type(run_cli, tmp_path: Path) -> None:
    import datasets
    import pyarrow.parquet as pq

    import datamill

    text = """
name: types
seed: 3
size: 60
columns:
  level: {sampler: categorical, values: [easy, medium, hard]}
  n: {sampler: integer, low: 1, high: 9}
  x: {sampler: uniform, low: 0, high: 1}
  big: {expr: "n > 4"}
  pair: {expr: "[n, n * 2]"}
  judge: {expr: "{'score': n, 'reason': level ~ ' one'}"}
  maybe: {expr: "level if n > 3 else none"}
  when: {template: "2024-01-{{ '%02d' | format(n) }}"}
output: {part_size: 25}
"""
    run_dir = _run(run_cli, tmp_path, text)
    out = tmp_path / "ex"
    out.mkdir()
    res = run_cli("export", str(run_dir), "--format", "jsonl", "--out", str(out / "full.jsonl"))
    assert res.returncode == 0, res.stderr
    jsonl = (out / "full.jsonl").read_bytes()
    assert jsonl == run_cli("cat", str(run_dir)).stdout.encode()  # internal_full is the records as stored
    records = [orjson.loads(line) for line in jsonl.splitlines()]
    assert any(r["maybe"] is None for r in records) and any(isinstance(r["maybe"], str) for r in records)
    done = datamill.export(run_dir, out / "full.parquet")  # the Python API, the same export
    assert done.records == 60 and done.metadata == out / "metadata.json"
    from_parquet = pq.read_table(out / "full.parquet").to_pylist()
    hf = datasets.Dataset.from_parquet(str(out / "full.parquet"), cache_dir=str(tmp_path / "hf-cache"))
    for rows in (from_parquet, hf.to_list()):
        assert len(rows) == len(records)
        for rec, row in zip(records, rows, strict=True):
            assert list(row) == list(rec)
            for key, value in rec.items():
                assert row[key] == value and _types(row[key]) == _types(value), (rec["sample_id"], key)
    assert hf.features["when"] == datasets.Value("string")  # ISO dates stay strings, as in the records
    # Row groups are bounded for streaming; the file is zstd-compressed; exporting again gives the same bytes.
    meta = pq.ParquetFile(out / "full.parquet").metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    first = (out / "full.parquet").read_bytes()
    assert run_cli("export", str(run_dir), "--out", str(out / "full.parquet")).returncode == 0
    assert (out / "full.parquet").read_bytes() == first


def _types(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _types(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_types(x) for x in v]
    return type(v).__name__


def test_metadata_beside_every_export(run_cli, tmp_path: Path) -> None:
    import hashlib

    srv = ScriptedServer(lambda prompt: f"a tagline for {prompt[-12:]}")
    try:
        text = RECIPE.replace("output: {part_size: 40}", f"""output: {{part_size: 40}}
model: {{backend: openai, base_url: "{srv.base_url}", model: stub-model, concurrency: 4}}
""").replace("size: 120", "size: 12").replace(
            "  text: {template:",
            '  tagline: {llm: {prompt: "Tagline for {{ region }} {{ n }}", max_tokens: 16}}\n  text: {template:',
        )  # fmt: skip
        run_dir = _run(run_cli, tmp_path, text)
    finally:
        srv.close()
    out = tmp_path / "ex"
    out.mkdir()
    for profile, name in (("schema_compat", "compat.parquet"), ("extended", "ext.jsonl")):
        res = run_cli("export", str(run_dir), "--profile", profile, "--out", str(out / name))
        assert res.returncode == 0, res.stderr
        assert f"export {profile}: 12 records -> {out / name}" in res.stdout
    meta = orjson.loads((out / "metadata.json").read_bytes())
    manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
    assert meta["schema_version"] == 1 and meta["generator"] == {
        "name": "datamill",
        "version": manifest["datamill_version"],
    }
    assert meta["recipe"] == {"name": "shop", "version": "2", "hash": manifest["recipe_hash"]}
    assert meta["seed"] == 11 and meta["records"] == 12
    port = srv.base_url.split(":")[2].split("/")[0]
    assert meta["models"] == [{"column": "tagline", "backend": "openai", "model": "stub-model",
                               "provider": f"127.0.0.1:{port}", "attempts": 12}]  # fmt: skip
    assert meta["created"].endswith("Z") and meta["created"][:4].isdigit()
    assert [f["path"] for f in meta["files"]] == ["compat.parquet", "ext.jsonl"]  # both exports, one metadata.json
    for f in meta["files"]:
        body = (out / f["path"]).read_bytes()
        assert f["sha256"] == hashlib.sha256(body).hexdigest() and f["bytes"] == len(body) and f["records"] == 12
        assert meta["created"][:10].encode() not in body  # the creation date stays out of the records
    assert meta["files"][0]["fields"] == ["sample_id", "prompt", "n", "region"]
    assert meta["files"][1]["fields"] == ["sample_id", "text", "n", "region", "age", "price"]
    # Another dataset's metadata.json is not overwritten: exit 2, nothing written.
    other = _run(run_cli, tmp_path, RECIPE.replace("seed: 11", "seed: 12"), name="other")
    res = run_cli("export", str(other), "--out", str(out / "other.parquet"))
    assert res.returncode == 2 and "describes another dataset (shop" in res.stderr
    assert not (out / "other.parquet").exists()


def _drop_field(run_dir: Path, part_index: int, line_index: int, field: str) -> str:
    from helpers import reseal

    part = sorted((run_dir / "parts").glob("*.jsonl"))[part_index]
    lines = part.read_bytes().splitlines(keepends=True)
    rec = orjson.loads(lines[line_index])
    del rec[field]
    lines[line_index] = orjson.dumps(rec) + b"\n"
    part.write_bytes(b"".join(lines))
    reseal(part)
    return str(rec["sample_id"])


def test_a_record_missing_a_required_field_fails_the_export_naming_it(run_cli, tmp_path: Path) -> None:
    run_dir = _run(run_cli, tmp_path)
    sid = _drop_field(run_dir, 1, 7, "text")  # record 47: no text, so no prompt in schema_compat
    out = tmp_path / "ex"
    out.mkdir()
    for name in ("compat.parquet", "compat.jsonl"):
        res = run_cli("export", str(run_dir), "--profile", "schema_compat", "--out", str(out / name))
        assert res.returncode == 1, res.stdout + res.stderr
        assert f"export schema_compat: record 47 (sample_id {sid}) does not match the profile's schema" in res.stderr
        assert "'prompt' is a required property" in res.stderr and "nothing was written" in res.stderr
    assert list(out.iterdir()) == []  # no file, no temporary, no metadata.json
    # The profiles without that requirement export it (the field is simply absent or null).
    assert run_cli("export", str(run_dir), "--profile", "extended", "--out", str(out / "e.parquet")).returncode == 0
    # A release of it stops the same way, with no folder.
    rel = tmp_path / "rel"
    res = run_cli("release", str(run_dir), "--out", str(rel))
    assert res.returncode == 1 and f"record 47 (sample_id {sid})" in res.stderr
    assert not rel.exists() and not list(tmp_path.glob(".rel*"))


def test_a_planted_gate_violation_blocks_the_release(run_cli, tmp_path: Path) -> None:
    planted = RECIPE.replace("  - {metric: tokens.text.p90, max: 1000, severity: fail}",
                             "  - {metric: tokens.text.p90, max: 1000, severity: fail}\n"
                             "  - {metric: chars.text.p50, max: 20, severity: fail}")  # fmt: skip
    run_dir = _run(run_cli, tmp_path, planted)
    rel = tmp_path / "rel"
    res = run_cli("release", str(run_dir), "--out", str(rel))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "FAIL gate chars.text.p50" in res.stdout and "release blocked by gate chars.text.p50" in res.stdout
    assert "PASS gate tokens.text.p90" in res.stdout and f"nothing was written to {rel}" in res.stdout
    assert not rel.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # The same gate from a --gates file blocks the clean run too; without it, the run releases.
    clean = _run(run_cli, tmp_path, name="clean")
    gates = tmp_path / "gates.yaml"
    gates.write_text("- {metric: chars.text.p50, max: 20, severity: fail}\n")
    res = run_cli("release", str(clean), "--out", str(rel), "--gates", str(gates))
    assert res.returncode == 1 and "release blocked by gate chars.text.p50" in res.stdout and not rel.exists()
    assert run_cli("release", str(clean), "--out", str(rel)).returncode == 0 and (rel / "README.md").is_file()


def test_a_golden_regression_past_tolerance_blocks_the_release(run_cli, tmp_path: Path) -> None:
    recipe = tmp_path / "g.yaml"
    recipe.write_text(RECIPE)
    g, base = tmp_path / "golden.json", tmp_path / "base.json"
    assert (
        run_cli("golden", "create", str(recipe), "--size", "30", "--stratify", "age", "--out", str(g)).returncode == 0
    )
    assert run_cli("golden", "run", str(recipe), "--golden", str(g), "--out", str(base)).returncode == 0
    # A longer adjective moves the text length metrics past their 10% tolerance.
    drifted = _run(run_cli, tmp_path, RECIPE, "--param", "adj=extraordinarily_bright", name="drifted")
    rel = tmp_path / "rel"
    res = run_cli("release", str(drifted), "--out", str(rel), "--golden", str(g), "--baseline", str(base))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "FAIL golden chars.text.p50: " in res.stdout and "release blocked by golden chars.text.max = " in res.stdout
    assert "also: golden chars.text.p50 = " in res.stdout
    assert not rel.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # The run the baseline was made from passes, and its card shows the comparison.
    same = _run(run_cli, tmp_path, RECIPE, name="same")
    res = run_cli("release", str(same), "--out", str(rel), "--golden", str(g), "--baseline", str(base))
    assert res.returncode == 0, res.stdout + res.stderr
    rows = orjson.loads((rel / "reports" / "golden.json").read_bytes())["rows"]
    assert rows and all(r["passed"] for r in rows)
    assert (
        f"{len(rows)} of {len(rows)} metrics within tolerance of the baseline, on 30" in (rel / "README.md").read_text()
    )
    # --golden without --baseline is a usage error.
    res = run_cli("release", str(same), "--out", str(tmp_path / "r2"), "--golden", str(g))
    assert res.returncode == 2 and "--golden and --baseline go together" in res.stderr


class HubStandIn:
    """The Hub endpoints huggingface_hub's ``create_repo`` and ``upload_folder`` call, on loopback.

    Every file is answered ``uploadMode: regular`` at preupload, so it arrives base64 in the
    NDJSON commit. ``echo_token`` makes the commit fail with a body quoting the Authorization header.
    """

    def __init__(self, echo_token: bool = False) -> None:
        files: dict[str, bytes] = {}
        seen: list[tuple[str, str, dict[str, str]]] = []
        self.files, self.requests = files, seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def _reply(self, status: int, doc: Any) -> None:
                body = orjson.dumps(doc)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                seen.append(("GET", self.path, dict(self.headers)))
                self._reply(404, {"error": "not here"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                seen.append(("POST", self.path, dict(self.headers)))
                path = self.path.split("?")[0]
                root = f"http://127.0.0.1:{self.server.server_address[1]}"
                if path == "/api/repos/create":
                    req = orjson.loads(body)
                    assert req["type"] == "dataset"
                    self._reply(200, {"url": f"{root}/datasets/{req['organization']}/{req['name']}"})
                elif path == "/api/validate-yaml":
                    self._reply(200, {"errors": [], "warnings": []})
                elif "/preupload/" in path:
                    paths = [f["path"] for f in orjson.loads(body)["files"]]
                    self._reply(200, {"files": [{"path": p, "uploadMode": "regular", "shouldIgnore": False,
                                                 "oid": None} for p in paths]})  # fmt: skip
                elif "/commit/" in path:
                    if echo_token:
                        self._reply(403, {"error": f"cannot commit for {self.headers.get('Authorization')}"})
                        return
                    for line in body.splitlines():
                        item = orjson.loads(line)
                        if item["key"] == "file":
                            files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    repo = path.split("/api/datasets/")[1].split("/commit/")[0]
                    self._reply(200, {"commitUrl": f"{root}/datasets/{repo}/commit/{'a' * 40}",
                                      "commitOid": "a" * 40, "pullRequestUrl": None})  # fmt: skip
                else:
                    self._reply(404, {"error": "not here"})

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


TOKEN = "hf_SentinelToken1234567890abcdefXYZ"


def _push(run_cli_env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "datamill", *args], capture_output=True, text=True,
                          env=run_cli_env, timeout=240)  # fmt: skip


def _no_token_under(*folders: Path) -> None:
    for folder in folders:
        for name, body in _files(folder).items():
            assert TOKEN.encode() not in body, f"{folder.name}/{name}"
            assert base64.b64encode(TOKEN.encode()) not in body, f"{folder.name}/{name}"


@pytest.fixture
def hub() -> Any:
    started: list[HubStandIn] = []

    def start(echo_token: bool = False) -> HubStandIn:
        s = HubStandIn(echo_token)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


def test_push_uploads_every_file_and_the_token_stays_secret(run_cli, hub: Any, tmp_path: Path) -> None:
    run_dir = _run(run_cli, tmp_path)
    stand_in = hub()
    env = cli_env()
    env.update(HF_ENDPOINT=stand_in.url, HF_TOKEN=TOKEN, HF_HOME=str(tmp_path / "hf-home"))
    rel = tmp_path / "rel"
    res = _push(env, "release", str(run_dir), "--out", str(rel), "--push", "my-org/shop")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"pushed: {stand_in.url}/datasets/my-org/shop/commit/{'a' * 40}" in res.stdout
    assert stand_in.files == _files(rel)  # every file of the folder arrived, byte for byte
    assert len(stand_in.files) == 8
    posts = [p.split("?")[0] for m, p, _ in stand_in.requests if m == "POST"]
    assert posts[0] == "/api/repos/create" and posts[-1] == "/api/datasets/my-org/shop/commit/main"
    auth = {h.get("Authorization") or h.get("authorization") for m, _, h in stand_in.requests if m == "POST"}
    assert auth == {f"Bearer {TOKEN}"}  # the token went to the Hub, and only in the header
    card = (rel / "README.md").read_text()
    assert 'load_dataset("my-org/shop", "schema_compat", split="train")' in card
    assert TOKEN not in res.stdout + res.stderr
    _no_token_under(rel, run_dir, tmp_path / "hf-home")
    # A Hub that quotes the token back in an error: exit 1, one line, the token redacted.
    echo = hub(echo_token=True)
    env["HF_ENDPOINT"] = echo.url
    res = _push(env, "release", str(run_dir), "--out", str(rel), "--push", "my-org/shop")
    assert res.returncode == 1 and "datamill: error: --push my-org/shop:" in res.stderr
    assert "Bearer ***" in res.stderr and TOKEN not in res.stdout + res.stderr
    _no_token_under(rel, run_dir, tmp_path / "hf-home")
    # Without HF_TOKEN: exit 2 before anything is built or sent.
    env.pop("HF_TOKEN")
    res = _push(env, "release", str(run_dir), "--out", str(tmp_path / "rel3"), "--push", "my-org/shop")
    assert res.returncode == 2 and "set HF_TOKEN" in res.stderr and not (tmp_path / "rel3").exists()
    assert os.environ.get("HF_TOKEN") != TOKEN


def test_exports_leave_the_recipe_hash_alone_and_bad_profiles_are_refused(run_cli, tmp_path: Path) -> None:
    import datamill

    bare = RECIPE.split("exports:")[0] + "output: {part_size: 40}\n"
    assert datamill.load_recipe(bare).hash == datamill.load_recipe(RECIPE).hash
    # A run made before its exports were declared ships them through --recipe (same records).
    run_dir = _run(run_cli, tmp_path, bare, name="bare")
    full = tmp_path / "full.yaml"
    full.write_text(RECIPE)
    rel = tmp_path / "rel"
    res = run_cli("release", str(run_dir), "--out", str(rel), "--recipe", str(full))
    assert res.returncode == 0, res.stdout + res.stderr
    assert sorted(p.name for p in (rel / "data").iterdir()) == sorted(CONFIGS)
    other = tmp_path / "other.yaml"
    other.write_text(RECIPE.replace("low: 1, high: 9", "low: 1, high: 8"))
    res = run_cli("export", str(run_dir), "--recipe", str(other), "--out", str(tmp_path / "x.parquet"))
    assert res.returncode == 2 and "did not make" in res.stderr
    res = run_cli("export", str(run_dir), "--profile", "nope", "--out", str(tmp_path / "x.parquet"))
    assert res.returncode == 2 and "'nope' is not an export profile" in res.stderr
    bad = {
        "exports:\n  internal_full: {fields: [n]}\n": "exports: internal_full keeps every field",
        "exports:\n  p: {fields: [n], rename: {text: t}}\n": "exports.p: rename: 'text' is not in fields",
        "exports:\n  p: {fields: [n, text], rename: {text: n}}\n": "exports.p: rename: two fields would be exported",
        "exports:\n  p: {schema: {type: 3}}\n": "exports.p.schema: not a valid JSON schema",
        "exports:\n  p: {schema: mod:Model}\n": "exports.p.schema: expected a JSON schema, inline or a .json file",
        "exports:\n  p: {fields: []}\n": "exports.p.fields",
        "exports:\n  p: {field: [n]}\n": "exports.p.field: unknown key",
        "release: {profiles: [p]}\n": "release: profiles: 'p' is not an export profile",
        "release: {licence: mit}\n": "release.licence: unknown key",
    }
    for i, (block, message) in enumerate(bad.items()):
        recipe = tmp_path / f"bad{i}.yaml"
        recipe.write_text(bare + block)
        res = run_cli("run", str(recipe), "--out", str(tmp_path / f"bad{i}"))
        assert res.returncode == 2 and message in res.stderr, (block, res.stderr)
        assert res.stderr.startswith(f"{recipe}:") and not (tmp_path / f"bad{i}").exists()
