"""Issue 12 (item 1): rows as slots. A recipe's ``source:`` is read row by row, each row a slot;
the output is every input column unchanged plus the new ones, in input order, one record per row.

Expected outputs are computed here from the input rows with plain Python (not by datamill)."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import datamill
from helpers import cli_env

ROWS = 2500  # three parts of 1000: reads cross the index's 1024-row checkpoints


def datamill_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "datamill", *args], capture_output=True, text=True, env=cli_env(),
                          cwd=cwd, timeout=300)  # fmt: skip


def rows(n: int = ROWS) -> list[dict]:
    rng = random.Random(5)
    words = ["alpha", "beta", "gamma", "ünïcode", "tab\there", 'quote"d', "comma, inside", "line\nbreak"]
    return [
        {"id": f"r{i:05d}", "text": f"{rng.choice(words)} {i}", "n": rng.randint(-(10**6), 10**6)} for i in range(n)
    ]


def write_source(path: Path, data: list[dict], fmt: str) -> None:
    if fmt == "jsonl":
        with open(path, "w", encoding="utf-8") as f:
            for r in data:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(list(data[0]))
            for r in data:
                w.writerow([r[k] for k in data[0]])
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(data), path, row_group_size=700)
    elif fmt == "hf":
        from datasets import Dataset

        Dataset.from_list(data).save_to_disk(str(path))
    elif fmt == "parquet-folder":
        path.mkdir()
        for i in range(0, len(data), 900):
            pq.write_table(pa.Table.from_pylist(data[i : i + 900]), path / f"part-{i // 900:03d}.parquet")


RECIPE = """
name: src
seed: 3
source: {{path: {path}, key: id}}
columns:
  shout: {{template: "{{{{ text | upper }}}}/{{{{ n }}}}"}}
  pick: {{sampler: integer, low: 0, high: 1000000}}
"""


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet", "hf", "parquet-folder"])
def test_every_row_out_in_order_with_its_input_columns(tmp_path: Path, fmt: str) -> None:
    data = rows()
    src = tmp_path / {"jsonl": "in.jsonl", "csv": "in.csv", "parquet": "in.parquet"}.get(fmt, "in_dir")
    write_source(src, data, fmt)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(path=src.name))
    res = datamill_cli("run", str(recipe), "--out", str(tmp_path / "out"), "--workers", "2", "--progress", "none")
    assert res.returncode == 0, res.stderr
    out = [orjson.loads(x) for x in datamill_cli("cat", str(tmp_path / "out")).stdout.splitlines()]
    assert len(out) == len(data)  # none lost, none added
    for rec, row in zip(out, data, strict=True):
        want = {k: (str(v) if fmt == "csv" else v) for k, v in row.items()}  # CSV has no types: strings
        assert rec["sample_id"] == row["id"]
        assert {k: rec[k] for k in want} == want  # input columns unchanged
        assert list(rec)[: len(want) + 1] == ["sample_id", *want]  # input columns first, in input order
        assert rec["shout"] == f"{want['text'].upper()}/{want['n']}"
        assert 0 <= rec["pick"] <= 10**6
    if fmt == "jsonl":  # strings byte for byte: the JSON text of each input value is in the output line
        lines = datamill_cli("cat", str(tmp_path / "out")).stdout.splitlines()
        for line, row in zip(lines[:50], data, strict=False):
            assert json.dumps(row["text"], ensure_ascii=False) in line


def test_size_takes_the_first_rows_and_the_manifest_records_the_source(tmp_path: Path) -> None:
    data = rows(300)
    write_source(tmp_path / "in.jsonl", data, "jsonl")
    (tmp_path / "r.yaml").write_text(RECIPE.format(path="in.jsonl"))
    r = datamill.load_recipe(tmp_path / "r.yaml", size=120)
    datamill.run(r, tmp_path / "out", workers=1, progress=False)
    got = datamill.read(tmp_path / "out").to_list()
    assert [g["id"] for g in got] == [d["id"] for d in data[:120]]
    manifest = orjson.loads((tmp_path / "out" / "manifest.json").read_bytes())
    assert manifest["source"]["rows"] == 300 and manifest["source"]["key"] == "id"
    with pytest.raises(datamill.UsageError, match="has only 300 rows"):
        datamill.load_recipe(tmp_path / "r.yaml", size=301)


def test_keyed_rows_keep_their_values_when_unrelated_rows_move(tmp_path: Path) -> None:
    data = rows(400)
    write_source(tmp_path / "a.jsonl", data, "jsonl")
    moved = data[200:] + data[:200]
    random.Random(1).shuffle(moved)
    write_source(tmp_path / "b.jsonl", moved, "jsonl")
    outs = {}
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text(RECIPE.format(path=f"{name}.jsonl"))
        datamill.run(datamill.load_recipe(tmp_path / f"{name}.yaml"), tmp_path / name, workers=1, progress=False)
        outs[name] = {r["sample_id"]: r for r in datamill.read(tmp_path / name)}
    assert outs["a"] == outs["b"]  # same key, same sampled value, whatever the row's position
    assert len({r["pick"] for r in outs["a"].values()}) > 300  # and the values differ between rows


def test_a_resume_over_changed_input_is_refused(tmp_path: Path) -> None:
    data = rows(300)
    write_source(tmp_path / "in.jsonl", data, "jsonl")
    (tmp_path / "r.yaml").write_text(RECIPE.format(path="in.jsonl"))
    assert datamill_cli("run", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "out")).returncode == 0
    data[17]["text"] = "edited"
    write_source(tmp_path / "in.jsonl", data, "jsonl")
    res = datamill_cli("run", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "out"))
    assert res.returncode == 2
    assert "in.jsonl changed since this run started" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_columns_of_the_source_are_checked_like_columns(tmp_path: Path) -> None:
    write_source(tmp_path / "in.jsonl", rows(10), "jsonl")
    (tmp_path / "r.yaml").write_text(RECIPE.format(path="in.jsonl").replace("{{ n }}", "{{ nn }}"))
    res = datamill_cli("run", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and "unknown column 'nn'; expected one of: id, text, n, shout, pick" in res.stderr
    (tmp_path / "r2.yaml").write_text(RECIPE.format(path="in.jsonl").replace("shout:", "text:"))
    res = datamill_cli("run", str(tmp_path / "r2.yaml"), "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and "'text' is a column of the source" in res.stderr
    assert not (tmp_path / "out").exists()


# -- malformed inputs: one line FILE:LINE: what, exit 2, nothing written; or failed slots with --on-bad-row skip


def _jsonl(tmp: Path, body: bytes) -> str:
    (tmp / "in.jsonl").write_bytes(body)
    return "in.jsonl"


def _csv(tmp: Path, body: bytes) -> str:
    (tmp / "in.csv").write_bytes(body)
    return "in.csv"


def _parquet(tmp: Path, table: list[dict]) -> str:
    pq.write_table(pa.Table.from_pylist(table), tmp / "in.parquet")
    return "in.parquet"


def _file(name: str, body: bytes) -> object:
    def make(tmp: Path) -> str:
        (tmp / name).write_bytes(body)
        return name

    return make


def _folder(name: str, files: dict[str, bytes]) -> object:
    def make(tmp: Path) -> str:
        for rel, body in files.items():
            (tmp / name / rel).parent.mkdir(parents=True, exist_ok=True)
            if rel.endswith("/"):
                (tmp / name / rel).mkdir(exist_ok=True)
            else:
                (tmp / name / rel).write_bytes(body)
        return name

    return make


GOOD = b'{"id": "a", "text": "x", "n": 1}\n'
TAIL = b'{"id": "z", "text": "last", "n": 9}\n'

# (name, make source, expected message (after the file name), row-level: skip mode runs the rest)
MALFORMED = [
    ("truncated jsonl line", lambda t: _jsonl(t, GOOD + b'{"id": "b", "text": "y"\n' + TAIL),
     "in.jsonl:2: not valid JSON", True),
    ("jsonl line not an object", lambda t: _jsonl(t, GOOD + b"[1, 2]\n" + TAIL),
     "in.jsonl:2: expected a JSON object, got list", True),
    ("non-utf8 byte in jsonl", lambda t: _jsonl(t, GOOD + b'{"id": "b", "text": "\xff"}\n' + TAIL),
     "in.jsonl:2: not UTF-8: byte 0xff", True),
    ("missing key in a jsonl row", lambda t: _jsonl(t, GOOD + b'{"text": "y", "n": 2}\n' + TAIL),
     "in.jsonl:2: missing key column 'id'", True),
    ("duplicate key values", lambda t: _jsonl(t, GOOD + b'{"id": "b", "text": "y", "n": 2}\n' + GOOD + TAIL),
     "in.jsonl:3: duplicate key 'a' (first on line 1)", True),
    ("null key", lambda t: _jsonl(t, GOOD + b'{"id": null, "text": "y", "n": 2}\n' + TAIL),
     "in.jsonl:2: key column 'id' is empty", True),
    ("key of the wrong type", lambda t: _jsonl(t, GOOD + b'{"id": [1], "text": "y", "n": 2}\n' + TAIL),
     "in.jsonl:2: key column 'id' must be a string or an integer, got list", True),
    ("integer too large for JSON readers", lambda t: _jsonl(t, GOOD + b'{"id": "b", "n": 1' + b"0" * 30 + b"}\n" + TAIL),
     "in.jsonl:2: an integer beyond 64 bits", True),
    ("empty file", lambda t: _jsonl(t, b""), "in.jsonl: has no rows", False),
    ("only blank lines", lambda t: _jsonl(t, b"\n  \n\n"), "in.jsonl: has no rows", False),
    ("no row readable", lambda t: _jsonl(t, b"garbage\nmore garbage\n"),
     "in.jsonl: no row could be read (in.jsonl:1: not valid JSON", False),
    ("csv row with the wrong number of fields", lambda t: _csv(t, b"id,text,n\na,x,1\nb,y,2,extra\nz,last,9\n"),
     "in.csv:3: expected 3 fields (as in the header), got 4", True),
    ("csv duplicate keys", lambda t: _csv(t, b"id,text,n\na,x,1\na,y,2\nz,last,9\n"),
     "in.csv:3: duplicate key 'a' (first on line 2)", True),
    ("non-utf8 byte in csv", lambda t: _csv(t, b"id,text,n\na,x,1\nb,\xfe,2\nz,last,9\n"),
     "in.csv:3: not UTF-8: byte 0xfe", True),
    ("empty csv", lambda t: _csv(t, b""), "in.csv: is empty (a CSV source needs a header line)", False),
    ("csv header without the key", lambda t: _csv(t, b"key,text,n\na,x,1\n"),
     "in.csv:1: no key column 'id' in the header", False),
    ("csv header naming a column twice", lambda t: _csv(t, b"id,text,text\na,x,1\n"),
     "in.csv:1: the header names column 'text' twice", False),
    ("csv with an unterminated quote", lambda t: _csv(t, b'id,text,n\na,"x,1\n'), "in.csv:2: not valid CSV", False),
    ("csv with a header only", lambda t: _csv(t, b"id,text,n\n"), "in.csv: has no rows", False),
    ("parquet without the key column", lambda t: _parquet(t, [{"text": "x", "n": 1}]),
     "in.parquet: no key column 'id'", False),
    ("parquet with a null key", lambda t: _parquet(t, [{"id": "a", "text": "x", "n": 1}, {"id": None, "text": "y", "n": 2},
                                                       {"id": "z", "text": "last", "n": 9}]),
     "in.parquet:row 2: key column 'id' is empty", True),
    ("a file that is not parquet", _file("in.parquet", b"PAR1 not really"),
     "in.parquet: not a parquet file", False),
    ("a directory that is not a dataset", _folder("d", {"notes.txt": b"hi"}), "d: not a dataset folder", False),
    ("a DatasetDict folder", _folder("dd", {"train/": b"", "dataset_dict.json": b"{}"}),
     "dd: a DatasetDict folder; point source.path at one split (train)", False),
    ("no such file", lambda t: "missing.jsonl", "missing.jsonl: no such file or directory", False),
    ("a name that does not say the format", _file("rows.txt", b"{}"),
     "rows.txt: cannot tell the format from the name", False),
]  # fmt: skip


@pytest.mark.parametrize(("name", "make", "message", "row_level"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_input_one_line_exit_2_nothing_written(tmp_path: Path, name, make, message, row_level) -> None:
    path = make(tmp_path)
    (tmp_path / "r.yaml").write_text(RECIPE.format(path=path))
    out = tmp_path / "out"
    res = datamill_cli("run", "r.yaml", "--out", str(out), "--progress", "none", cwd=tmp_path)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines
    assert not out.exists()
    if not row_level:
        return
    res = datamill_cli("run", "r.yaml", "--out", str(out), "--progress", "none", "--on-bad-row", "skip", cwd=tmp_path)
    assert res.returncode == 1, res.stderr  # a run with failed slots
    st = orjson.loads(datamill_cli("status", str(out), "--json").stdout)
    assert st["slots_failed"] == 1 and st["slots_done"] == st["slots_total"] - 1
    events = [orjson.loads(x) for x in (out / "logs" / "run.jsonl").read_text().splitlines()]
    assert [e["reason"] for e in events if e["event"] == "slot_failed"] == ["source: " + lines[0]]
    got = [orjson.loads(x) for x in datamill_cli("cat", str(out)).stdout.splitlines()]
    assert got[0]["sample_id"] == "a" and got[-1]["sample_id"] == "z" and got[-1]["shout"].startswith("LAST/")
