"""Scale (marked; `make test-scale`): memory stays flat as the run grows (invariant 6)."""

from __future__ import annotations

import pytest

from datamill.bench.lambda_bench import run_lambda_bench

pytestmark = pytest.mark.scale


@pytest.mark.timeout(900)
def test_peak_rss_is_flat_from_small_to_large_runs() -> None:
    small = run_lambda_bench(size=10_000, workers=2)
    large = run_lambda_bench(size=150_000, workers=2)
    # ~80K records against ~1.2M records: 15x the data, the same memory.
    assert large["datamill"]["records"] > 10 * small["datamill"]["records"]
    assert large["same_records"] and small["same_records"]
    assert large["datamill"]["peak_rss_mb"] <= small["datamill"]["peak_rss_mb"] * 1.15 + 8, (small, large)
