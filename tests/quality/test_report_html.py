"""The HTML report in a real headless Chromium: no console errors, plots rendered in the DOM.

The screenshot is kept as a test artefact in test-artifacts/report.png.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import cli_env

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = pytest.mark.skipif(CHROMIUM is None and not sys.platform.startswith("linux"), reason="needs chromium")


def chromium(url: str, tmp: Path, screenshot: Path | None = None) -> tuple[str, list[str]]:
    """Rendered DOM and console lines (console calls and uncaught errors) of ``url``."""
    assert CHROMIUM is not None, "chromium is not installed: `make test` installs Debian's chromium"
    flags = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0", "--window-size=1200,2400",
    ]  # fmt: skip
    res = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    console = [line for line in res.stderr.splitlines() if ":CONSOLE" in line]
    if screenshot is not None:
        subprocess.run([*flags, f"--screenshot={screenshot}", url], capture_output=True, timeout=120, check=True)
    return res.stdout, console


def test_console_check_catches_a_broken_page(tmp_path: Path) -> None:
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>missingFunction();</script></body></html>")
    _, console = chromium(page.as_uri(), tmp_path)
    assert any("missingFunction" in line for line in console)


def test_report_renders_every_plot_without_console_errors(run_cli, fake_server, tmp_path: Path) -> None:
    srv = fake_server("--fault-rate", "0.1", "--seed", "3")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
name: rep
size: 120
model: {{backend: openai, base_url: "{srv.base_url}", model: m, concurrency: 16, timeout_s: 2}}
columns:
  level: {{sampler: categorical, values: {{easy: 2, hard: 1}}}}
  tone: {{sampler: categorical, values: [dry, warm, odd]}}
  n: {{sampler: integer, low: 1, high: 3}}
  question: {{template: "A {{{{ level }}}} question {{{{ n }}}} in a {{{{ tone }}}} tone"}}
  answer: {{llm: {{prompt: "Answer: {{{{ question }}}}", max_tokens: 32}}}}
quotas:
  level: {{easy: 1, hard: 1}}
gates:
  - {{metric: chars.question.p90, max: 1000, severity: fail}}
  - {{metric: chars.question.p50, max: 5, severity: warn}}
output: {{part_size: 40}}
""")
    out = tmp_path / "run"
    env = cli_env()
    assert subprocess.run([sys.executable, "-m", "datamill", "run", str(recipe), "--out", str(out)], env=env,
                          capture_output=True, timeout=240).returncode == 0  # fmt: skip
    assert run_cli("verify", str(out), "--no-tokens").returncode == 0  # the warn gate fails, exit stays 0
    run_cli("dedup", str(out), "--field", "question", "--rounds", "1")
    res = run_cli("report", str(out))
    assert res.returncode == 0, res.stderr
    page = out / "reports" / "report.html"
    text = page.read_text()
    # Self-contained: nothing to load (the SVG namespace URI is a name, not a request).
    assert re.search(r"(src|href|url)\s*[=(]\s*[\"']?https?://", text) is None
    assert "<script src" not in text and "<link" not in text and "fetch(" not in text
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    dom, console = chromium(page.as_uri(), tmp_path, screenshot=shot)
    assert console == [], console
    assert 'data-rendered="yes"' in dom
    kinds = re.findall(r'<svg[^>]*data-kind="([^"]+)"', dom)
    assert kinds.count("length-histogram") >= 2  # question and answer
    assert kinds.count("category-bars") >= 2  # level and tone
    assert "dedup-rounds" in kinds and "latency-line" in kinds
    bars = re.findall(r'<rect[^>]*data-value="([0-9.e-]+)"', dom)
    assert len(bars) > 20 and any(float(v) > 0 for v in bars)
    assert 'id="gate-table"' in dom and ">PASS<" in dom and ">WARN<" in dom
    # Dedup left its unfixable duplicates out, so the quota table shows the shortfall.
    assert 'id="quota-table"' in dom and ">off<" in dom
    assert 'id="telemetry-table"' in dom and "latency p50 / p95 / p99 ms" in dom
    assert shot.is_file() and shot.stat().st_size > 10_000


DASHBOARD_RECIPE = """
name: dash
seed: 4
size: 800
params: {defect: anchor}
columns:
  p: {generator: "./gen.py:persona"}
gates:
  - {dashboard: opening_entropy, field: opening_move}
  - {dashboard: mattr, field: persona}
  - {dashboard: anchor_share, field: anchors}
  - {dashboard: pollyanna, field: persona}
  - {dashboard: near_dup_uniqueness, field: persona}
  - {safety: stereotypes, field: [persona, hobbies]}
  - {safety: fairness, attribute: region, table: tables/regions.csv, min_expected: 50, tolerance: 0.3}
output: {part_size: 400}
"""


def test_report_shows_dashboard_and_safety_gates_with_bands(run_cli, tmp_path: Path) -> None:
    import persona_data

    recipe = persona_data.write_recipe(tmp_path / "recipe", DASHBOARD_RECIPE)
    out = tmp_path / "run"
    assert run_cli("run", str(recipe), "--out", str(out)).returncode == 0
    assert run_cli("verify", str(out), "--no-tokens").returncode == 1  # the planted anchor is critical
    res = run_cli("report", str(out))
    assert res.returncode == 0, res.stderr
    page = out / "reports" / "report.html"
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report-dashboard.png"
    dom, console = chromium(page.as_uri(), tmp_path, screenshot=shot)
    assert console == [], console
    assert 'data-rendered="yes"' in dom and 'id="dashboard-table"' in dom
    rows = re.findall(r"<tr><td>([a-z_]+)</td><td>([^<]*)</td><td>([^<]*)</td><td class=\"band-([a-z]+)\">", dom)
    assert {(name, band) for name, _, _, band in rows} == {
        ("opening_entropy", "healthy"), ("mattr", "healthy"), ("anchor_share", "critical"), ("pollyanna", "healthy"),
        ("near_dup_uniqueness", "healthy"), ("stereotypes", "healthy"), ("fairness", "healthy")}  # fmt: skip
    assert "<td>&gt; 2</td><td>1.5 – 2</td><td>&lt; 1.5</td>" in dom  # opening entropy's three bands
    kinds = re.findall(r'<svg[^>]*data-kind="([^"]+)"', dom)
    assert kinds.count("band-gauge") == 7
    assert {"anchor-shares", "opening-bars", "pollyanna-hist", "fairness-bars"} <= set(kinds)
    gauges = re.findall(r'<svg[^>]*data-kind="band-gauge" data-band="([a-z]+)"', dom)
    assert gauges.count("critical") == 1
    assert "Capital park 0" in dom  # the anchor named in the why column
    assert shot.is_file() and shot.stat().st_size > 10_000
