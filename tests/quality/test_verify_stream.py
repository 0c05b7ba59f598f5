"""verify in flat memory and one pass (issue 23): exact percentiles from histograms, duplicate ids
found across spilled runs, capped categories, and a report that reads no part."""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

import datamill
from datamill.quality import stream
from helpers import reseal

ALPHABET = "abcdefghij klmnopqrst "


def nearest_rank(values: list[int]) -> dict[str, Any]:
    """This test's own percentiles: sort every value, take index int(f * n)."""
    s = sorted(values)
    n = len(s)
    pick = {f"p{int(f * 100)}": s[min(n - 1, int(f * n))] for f in (0.10, 0.50, 0.90)}
    return {**pick, "max": s[-1], "mean": round(sum(s) / n, 2)}


def test_percentiles_on_1m_records_equal_those_of_all_values(tmp_path: Path) -> None:
    rng = random.Random(7)
    n = 1_000_000
    path = tmp_path / "items.jsonl"
    short, text = [], []
    with open(path, "wb") as f:
        for i in range(n):
            a = "x" * int(rng.lognormvariate(3, 0.6))  # skewed lengths, many distinct values
            b = "y" * rng.randrange(0, 400)
            short.append(len(a))
            text.append(len(b))
            f.write(orjson.dumps({"sample_id": f"s:{i}", "a": a, "b": b}) + b"\n")
    report = datamill.verify(path, count_tokens=False)
    fields = report["summary"]["fields"]
    assert report["header"]["num_items"] == n
    assert fields["a"]["chars"] == nearest_rank(short)
    assert fields["b"]["chars"] == nearest_rank(text)
    # The report's length bins hold every value.
    assert sum(report["summary"]["lengths"]["b"]["counts"]) == n


def test_token_percentiles_equal_a_plain_tokenizer_count(tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    from datamill.tokenize import default_tokenizer_path

    rng = random.Random(3)
    words = ["river", "model", "quickly", "Bucharest", "naïve", "tokenization", "42", "ţară", "x"]
    path = tmp_path / "items.jsonl"
    recs = []
    for i in range(20_000):
        recs.append(
            {
                "sample_id": f"t:{i}",
                "kind": rng.choice(["alpha", "beta", "gamma"]),  # a category: its counts are memoised
                "text": " ".join(rng.choice(words) for _ in range(rng.randrange(1, 60))),
            }
        )
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    report = datamill.verify(path)
    tok = Tokenizer.from_file(str(default_tokenizer_path()))
    tok.no_padding()  # the file pads to 128 and truncates: a length is the text's own tokens
    tok.no_truncation()
    for field in ("kind", "text"):
        counts = [len(tok.encode(r[field], add_special_tokens=False).ids) for r in recs]
        assert report["summary"]["fields"][field]["tokens"] == nearest_rank(counts), field


def test_duplicate_ids_in_different_parts_are_named_across_spilled_runs(
    run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = tmp_path / "d.yaml"
    recipe.write_text(
        "name: d\nseed: 1\nsize: 6000\ncolumns:\n  x: {sampler: uniform, low: 0, high: 1000}\noutput: {part_size: 500}\n"
    )
    out = tmp_path / "run"
    assert run_cli("run", str(recipe), "--out", str(out)).returncode == 0
    parts = sorted((out / "parts").glob("*.jsonl"))
    assert len(parts) == 12
    # Part 10 repeats a line of part 1 and one of part 7 (twice): three extra occurrences.
    first = parts[1].read_bytes().splitlines(keepends=True)[4]
    second = parts[7].read_bytes().splitlines(keepends=True)[0]
    parts[10].write_bytes(parts[10].read_bytes() + first + second + second)
    reseal(parts[10])
    want = [orjson.loads(first)["sample_id"], orjson.loads(second)["sample_id"], orjson.loads(second)["sample_id"]]
    monkeypatch.setattr(stream, "SPILL_AT", 700)  # 6,003 ids: nine sorted runs on disk, merged by range
    spilled: list[int] = []
    real_spill = stream.DuplicateIds._spill

    def counting_spill(self: stream.DuplicateIds) -> None:
        spilled.append(len(self.hashes))
        real_spill(self)

    monkeypatch.setattr(stream.DuplicateIds, "_spill", counting_spill)
    report = datamill.verify(out, count_tokens=False)
    assert len(spilled) >= 8
    s = report["summary"]
    assert s["duplicate_sample_id_count"] == 3 and s["duplicate_sample_ids"] == want
    assert s["passed"] is False


def test_a_hash_collision_is_not_a_duplicate() -> None:
    class Colliding:
        """Ids with one hash and different values: only equal values may be named."""

        def __init__(self, v: str) -> None:
            self.v = v

        def __hash__(self) -> int:
            return 12345

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Colliding) and other.v == self.v

        def __str__(self) -> str:
            return self.v

    ids = [Colliding(v) for v in ("a", "b", "c", "b")]
    d = stream.DuplicateIds(spill_at=2)
    for i in ids:
        d.add(i)
    assert d.finish(lambda: iter(ids)) == (1, ["b"])
    clean = stream.DuplicateIds(spill_at=2)
    for i in ids[:3]:
        clean.add(i)
    assert clean.finish(lambda: iter(ids[:3])) == (0, [])


def test_declared_categories_are_capped_with_an_other_bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = stream.CappedCounter(3)
    for v in ["a", "b", "a", "c", "d", "e", "a"]:
        c.add(v)
    assert dict(c) == {"a": 3, "b": 1, "c": 1, stream.OTHER: 2}


def test_report_after_verify_opens_no_part(run_cli, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: r\nseed: 2\nsize: 300\ncolumns:\n"
        "  level: {sampler: categorical, values: [easy, hard]}\n"
        "  text: {template: 'a {{ level }} item number {{ slot }}'}\noutput: {part_size: 50}\n"
    )
    out = tmp_path / "run"
    assert run_cli("run", str(recipe), "--out", str(out)).returncode == 0
    assert run_cli("verify", str(out)).returncode == 0
    code = (
        "import sys\n"
        "opened = []\n"
        "sys.addaudithook(lambda ev, args: opened.append(str(args[0])) if ev == 'open' else None)\n"
        "import datamill\n"
        f"datamill.report({str(out)!r})\n"
        "print('\\n'.join(opened))\n"
    )
    import subprocess

    from helpers import cli_env

    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=120)
    assert res.returncode == 0, res.stderr
    opened = res.stdout.splitlines()
    assert any(p.endswith("verify.json") for p in opened), opened
    assert not [p for p in opened if "/parts/" in p], [p for p in opened if "/parts/" in p]
    page = (out / "reports" / "report.html").read_text()
    data = orjson.loads(page.split('<script id="data" type="application/json">', 1)[1].split("</script>", 1)[0])
    assert sum(data["lengths"]["text"]["counts"]) == 300
    # Without a verify report, report makes one (one pass) rather than fail.
    (out / "reports" / "verify.json").unlink()
    assert run_cli("report", str(out)).returncode == 0


def test_the_gates_process_is_stopped_when_verify_fails_midway(tmp_path: Path) -> None:
    import multiprocessing

    from datamill.errors import InputError
    from datamill.recipe.model import GateSpec

    path = tmp_path / "items.jsonl"
    lines = [orjson.dumps({"sample_id": f"s:{i}", "move": f"m{i % 7}", "text": "a b c d"}) for i in range(5000)]
    path.write_bytes(b"\n".join([*lines, b"{not json"]) + b"\n")
    gates = [GateSpec.model_validate({"dashboard": "opening_entropy", "field": "move"})]
    with pytest.raises(InputError, match="line 5001 is not JSON"):
        datamill.verify(path, gates=gates, count_tokens=False)
    assert multiprocessing.active_children() == []
    # The same gates on the good lines: the forked board's reading comes back.
    path.write_bytes(b"\n".join(lines) + b"\n")
    report = datamill.verify(path, gates=gates, count_tokens=False)
    (row,) = report["summary"]["dashboard"]
    assert row["value"] == pytest.approx(2.807, abs=0.001)  # log2(7): seven equally likely moves, rounded
    assert multiprocessing.active_children() == []
