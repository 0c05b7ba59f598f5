"""Scale (marked; `make test-scale`): verify's memory is flat from 1M to 10M records, and duplicate
sample_ids planted in different parts of a 10M-record run are found and named (issue 23)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from datamill.bench.verify_bench import peak_rss, run_verify_memory_bench
from helpers import reseal

pytestmark = pytest.mark.scale

TINY = """
name: tiny
seed: 1
size: {size}
columns:
  x: {{sampler: uniform, low: 0, high: 1000}}
output: {{part_size: 50000}}
"""


@pytest.mark.timeout(1200)
def test_duplicates_planted_in_a_10m_record_run_are_named_in_flat_memory(run_cli, tmp_path: Path) -> None:
    rss = {}
    for size in (1_000_000, 10_000_000):
        recipe = tmp_path / f"tiny-{size}.yaml"
        recipe.write_text(TINY.format(size=size))
        out = tmp_path / f"run-{size}"
        res = run_cli("run", str(recipe), "--out", str(out), "--workers", "2", timeout=900)
        assert res.returncode == 0, res.stderr
        parts = sorted((out / "parts").glob("*.jsonl"))
        want = []
        if size == 10_000_000:
            assert len(parts) == 200
            # The last part repeats a record of part 3; part 150 repeats one of part 90.
            for src, dst in ((3, 199), (90, 150)):
                line = parts[src].read_bytes().splitlines(keepends=True)[17]
                parts[dst].write_bytes(parts[dst].read_bytes() + line)
                reseal(parts[dst])
                want.append(orjson.loads(line)["sample_id"])
        report_path = tmp_path / f"verify-{size}.json"
        cmd = ["verify", str(out), "--no-tokens", "--report", str(report_path)]
        rss[size], _, output = peak_rss(cmd)
        report = orjson.loads(report_path.read_bytes())
        s = report["summary"]
        assert report["header"]["num_items"] == size + len(want), output
        assert s["duplicate_sample_id_count"] == len(want), output
        assert sorted(s["duplicate_sample_ids"]) == sorted(want)
        for part in parts:  # the disk back for the next size
            part.unlink()
    assert rss[10_000_000] <= rss[1_000_000] * 1.10, rss


@pytest.mark.timeout(1200)
def test_verify_rss_is_flat_on_text_heavy_data_from_1m_to_10m(tmp_path: Path) -> None:
    small, large = run_verify_memory_bench([1_000_000, 10_000_000], shape="text", workdir=str(tmp_path))
    assert small["num_items"] == 1_000_000 and large["num_items"] == 10_000_000
    assert small["duplicates"] == 0 and large["duplicates"] == 0
    assert large["peak_rss_mb"] <= small["peak_rss_mb"] * 1.10, (small, large)
