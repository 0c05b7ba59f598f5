"""``datamill report DIR``: one self-contained HTML file (``reports/report.html``).

It reads the run's ``reports/verify.json`` (when no part is newer) and never the parts: verify keeps
what the page draws (binned lengths, category counts) in its one pass. Without a current verify
report it runs one, without token counts.

No network: the data is a JSON blob inside the page and a small inline script draws the plots as
SVG — length histograms, category bars against their targets, quota plan versus actual, dedup
rounds, the gate table, the dashboard and safety gates (a table with their bands, a gauge per
metric, anchor shares, openings, polarity scores, fairness against its table), and, when the run
has an attempt log, the LLM telemetry summary and latency over time.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import orjson

from datamill.llm.telemetry import read_attempts, summarize
from datamill.quality.verify import verify
from datamill.store import RunDir, atomic

MAX_POINTS = 400  # latency-over-time points in the page (bucketed means)


def _latency_series(rows: list[dict[str, Any]]) -> list[list[float]]:
    live = [r for r in rows if r.get("status") != "cached" and r.get("latency_ms") is not None]
    if not live:
        return []
    step = max(1, len(live) // MAX_POINTS)
    return [
        [i, round(sum(float(r["latency_ms"]) for r in live[i : i + step]) / len(live[i : i + step]), 2)]
        for i in range(0, len(live), step)
    ]


def build_data(run_dir: str | Path) -> dict[str, Any]:
    rd = RunDir(run_dir)
    manifest = rd.manifest()
    verify_path = rd.reports_dir / "verify.json"
    newest_part = max((p.path.stat().st_mtime for p in rd.parts()), default=0.0)
    report: dict[str, Any] | None = None
    if verify_path.is_file() and verify_path.stat().st_mtime >= newest_part:
        report = orjson.loads(verify_path.read_bytes())
        if "lengths" not in report["summary"]:
            report = None  # written by a datamill before the binned lengths
    if report is None:  # no verify yet, or parts changed since (dedup): a quick one without token counts
        from datamill.recipe.model import GateSpec

        gates = [GateSpec.model_validate(g) for g in manifest["recipe"].get("gates") or []]
        report = verify(rd.path, count_tokens=False, gates=gates, allow_partial=True)
    recipe = manifest["recipe"]
    targets = {
        name: dict(zip(map(str, col["values"]), col.get("weights") or [1] * len(col["values"]), strict=False))
        for name, col in recipe["columns"].items()
        if col.get("sampler") == "categorical"
    }
    for name, weights in (recipe.get("quotas") or {}).items():
        targets[name] = {str(k): v for k, v in weights.items()}
    dedup_path = rd.reports_dir / "dedup.json"
    rows = list(read_attempts(rd.logs_dir / "attempts.jsonl"))
    return {
        "title": f"{manifest['recipe_name']} ({manifest['recipe_hash']})",
        "header": report["header"],
        "lengths": report["summary"]["lengths"],
        "histograms": report["summary"]["histograms"],
        "targets": targets,
        "quota": report["summary"]["quota"],
        "gates": report["summary"]["gates"],
        "metrics": report["summary"]["metrics"],
        "dashboard": report["summary"].get("dashboard") or [],
        "safety": report["summary"].get("safety") or [],
        "dedup": orjson.loads(dedup_path.read_bytes()) if dedup_path.is_file() else None,
        "telemetry": summarize(rows) if rows else None,
        "latency": _latency_series(rows),
    }


def render(data: dict[str, Any]) -> str:
    blob = orjson.dumps(data).decode().replace("</", "<\\/")
    return _PAGE.replace("{{TITLE}}", html.escape(data["title"])).replace("{{DATA}}", blob)


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    rd = RunDir(run_dir)
    path = Path(out) if out else rd.reports_dir / "report.html"
    atomic.write_bytes(path, render(build_data(rd.path)).encode())
    return path


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>datamill report: {{TITLE}}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#1d232a;padding:0 16px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #dde3ea;padding-bottom:4px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:16px}
.card{border:1px solid #dde3ea;border-radius:8px;padding:10px 12px;background:#fbfcfd}
.card h3{font-size:13px;margin:0 0 6px;color:#47525e}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #e6ebf0;padding:4px 8px;text-align:left}
.band-healthy{color:#1a7f37;font-weight:600}.band-warning{color:#9a6700;font-weight:600}.band-critical{color:#cf222e;font-weight:600}
.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}.warn{color:#9a6700;font-weight:600}
svg text{font-size:10px;fill:#47525e}.muted{color:#6e7781}
</style></head><body>
<h1>datamill report: {{TITLE}}</h1>
<p id="summary" class="muted"></p>
<h2>Gates</h2><div id="gates"></div>
<h2>Dashboard and safety</h2><div id="dashboard"></div><div id="dashboard-plots" class="grid"></div>
<h2>Field lengths (characters)</h2><div id="lengths" class="grid"></div>
<h2>Categories against targets</h2><div id="categories" class="grid"></div>
<h2>Quotas: plan and actual</h2><div id="quota"></div>
<h2>Dedup rounds</h2><div id="dedup"></div>
<h2>LLM telemetry</h2><div id="telemetry"></div>
<script id="data" type="application/json">{{DATA}}</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const NS = "http://www.w3.org/2000/svg";
function el(tag, attrs, parent, text) {
  const e = tag === "svg" || ["rect","line","polyline","text","g"].includes(tag)
    ? document.createElementNS(NS, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
function card(parentId, title) {
  const c = el("div", {class: "card"}, document.getElementById(parentId));
  el("h3", {}, c, title);
  return c;
}
function bars(parent, labels, series, colors, kind) {
  const W = 320, H = 170, P = 28, n = labels.length;
  const max = Math.max(1e-9, ...series.flat());
  const svg = el("svg", {width: W, height: H, class: "plot", "data-kind": kind}, parent);
  const bw = (W - 2 * P) / Math.max(1, n) / series.length;
  series.forEach((vals, s) => vals.forEach((v, i) => {
    const h = (H - 2 * P) * v / max;
    el("rect", {x: P + (i * series.length + s) * bw, y: H - P - h, width: Math.max(1, bw - 1), height: h,
      fill: colors[s], "data-value": v}, svg);
  }));
  el("line", {x1: P, y1: H - P, x2: W - P, y2: H - P, stroke: "#8c959f"}, svg);
  const every = Math.max(1, Math.ceil(n / 8));
  labels.forEach((l, i) => { if (i % every === 0)
    el("text", {x: P + i * series.length * bw, y: H - P + 12}, svg, String(l).slice(0, 10)); });
  el("text", {x: 2, y: P - 6}, svg, String(Math.round(max * 1000) / 1000));
  return svg;
}
const h = D.header;
document.getElementById("summary").textContent =
  `${h.num_items.toLocaleString()} items · report v${h.report_version}` + (h.recipe ? ` · recipe ${h.recipe.name} v${h.recipe.version}` : "");
const gates = document.getElementById("gates");
if (D.gates.length) {
  const t = el("table", {id: "gate-table"}, gates);
  const hr = el("tr", {}, t); ["metric", "value", "bound", "severity", "result"].forEach(x => el("th", {}, hr, x));
  for (const g of D.gates) {
    const r = el("tr", {}, t);
    el("td", {}, r, g.metric); el("td", {}, r, String(g.value));
    el("td", {}, r, g.bounds ? "healthy " + g.bounds.healthy : [g.min !== null ? "≥ " + g.min : "", g.max !== null ? "≤ " + g.max : ""].filter(Boolean).join(" "));
    el("td", {}, r, g.severity);
    el("td", {class: g.passed ? "pass" : (g.severity === "fail" ? "fail" : "warn")}, r, g.passed ? "PASS" : (g.severity === "fail" ? "FAIL" : "WARN"));
  }
} else el("p", {class: "muted"}, gates, "No gates declared.");
for (const [field, hist] of Object.entries(D.lengths)) {
  const c = card("lengths", field);
  bars(c, hist.edges.slice(0, -1), [hist.counts], ["#3b82f6"], "length-histogram");
}
for (const [name, counts] of Object.entries(D.histograms)) {
  const c = card("categories", name + (D.targets[name] ? " (bars: actual, grey: target)" : ""));
  const labels = Object.keys(counts);
  const total = labels.reduce((a, k) => a + counts[k], 0);
  const actual = labels.map(k => counts[k] / total);
  const series = [actual];
  const tw = D.targets[name];
  if (tw) { const ts = Object.values(tw).reduce((a, b) => a + b, 0); series.push(labels.map(k => (tw[k] || 0) / ts)); }
  bars(c, labels, series, ["#10b981", "#9ca3af"], "category-bars");
}
const q = document.getElementById("quota");
if (D.quota.length) {
  const t = el("table", {id: "quota-table"}, q);
  const hr = el("tr", {}, t); ["stratum", "planned", "actual", ""].forEach(x => el("th", {}, hr, x));
  for (const row of D.quota) {
    const r = el("tr", {}, t);
    el("td", {}, r, Object.entries(row.values).map(([k, v]) => k + "=" + v).join(", "));
    el("td", {}, r, String(row.planned)); el("td", {}, r, String(row.actual));
    el("td", {class: row.ok ? "pass" : "fail"}, r, row.ok ? "exact" : "off");
  }
} else el("p", {class: "muted"}, q, "No quotas in this recipe.");
const dd = document.getElementById("dedup");
if (D.dedup && D.dedup.rounds.length) {
  const c = card("dedup", `${D.dedup.method}: rejected per round, ${D.dedup.left_rejected.length} left rejected`);
  bars(c, D.dedup.rounds.map(r => "round " + r.round), [D.dedup.rounds.map(r => r.count)], ["#f59e0b"], "dedup-rounds");
} else el("p", {class: "muted"}, dd, D.dedup ? "Dedup ran: nothing rejected." : "Dedup has not run on this dir.");
const tel = document.getElementById("telemetry");
if (D.telemetry) {
  const T = D.telemetry, t = el("table", {id: "telemetry-table"}, tel);
  const rows = [["attempts", T.attempts], ["items/s", T.items_per_s === null ? "?" : T.items_per_s.toFixed(1)],
    ["latency p50 / p95 / p99 ms", [T.latency_ms.p50, T.latency_ms.p95, T.latency_ms.p99].join(" / ")],
    ["success / retry / failed / cached", [T.counts.success, T.counts.retry, T.counts.failed, T.counts.cached].join(" / ")],
    ["repairs", JSON.stringify(T.repairs)], ["failure reasons", JSON.stringify(T.failure_reasons)],
    ["prompt tokens (unpacked)", T.prompt_tokens + " (" + T.prompt_tokens_unpacked + ")"],
    ["completion tokens", T.completion_tokens], ["cost USD", T.cost_usd], ["drift flags", T.drift.flags.join(", ") || "none"]];
  for (const [k, v] of rows) { const r = el("tr", {}, t); el("td", {}, r, k); el("td", {}, r, String(v)); }
  if (D.latency.length) {
    const c = card("telemetry", "latency over time (ms, mean per bucket of attempts)");
    const W = 640, H = 180, P = 30, xs = D.latency.map(p => p[0]), ys = D.latency.map(p => p[1]);
    const xmax = Math.max(1, ...xs), ymax = Math.max(1e-9, ...ys);
    const svg = el("svg", {width: W, height: H, class: "plot", "data-kind": "latency-line"}, c);
    el("polyline", {fill: "none", stroke: "#6366f1", "stroke-width": 1.5,
      points: D.latency.map(([x, y]) => `${P + (W - 2 * P) * x / xmax},${H - P - (H - 2 * P) * y / ymax}`).join(" ")}, svg);
    el("line", {x1: P, y1: H - P, x2: W - P, y2: H - P, stroke: "#8c959f"}, svg);
    el("text", {x: 2, y: P - 8}, svg, ymax.toFixed(0) + " ms");
  }
} else el("p", {class: "muted"}, tel, "No LLM attempts in this run.");
const dash = document.getElementById("dashboard");
const boardRows = D.dashboard.concat(D.safety);
function gauge(parent, row) {
  // The value against its bands: zones coloured healthy / warning / critical, a mark at the value.
  const W = 320, H = 52, P = 10, v = row.value, wb = row.warn, cb = row.critical;
  const a = Math.min(v, wb, cb), b = Math.max(v, wb, cb);
  const pad = ((b - a) || Math.abs(b) || 1) * 0.35;
  const lo = a >= 0 && a - pad < 0 ? 0 : a - pad, hi = b + pad;
  const x = t => P + (W - 2 * P) * (t - lo) / (hi - lo);
  const svg = el("svg", {width: W, height: H, class: "plot", "data-kind": "band-gauge", "data-band": row.band}, parent);
  const zones = row.direction === "higher"
    ? [[lo, cb, "#fecaca"], [cb, wb, "#fde68a"], [wb, hi, "#bbf7d0"]]
    : [[lo, wb, "#bbf7d0"], [wb, cb, "#fde68a"], [cb, hi, "#fecaca"]];
  for (const [z0, z1, fill] of zones) if (z1 > z0) el("rect", {x: x(z0), y: 16, width: x(z1) - x(z0), height: 16, fill: fill}, svg);
  el("line", {x1: x(v), y1: 13, x2: x(v), y2: 35, stroke: "#1d232a", "stroke-width": 2, "data-value": v}, svg);
  el("text", {x: Math.max(P, Math.min(W - 60, x(v) - 12)), y: 10}, svg, String(v));
  el("text", {x: P, y: 47}, svg, String(Math.round(lo * 1000) / 1000));
  el("text", {x: W - P - 30, y: 47}, svg, String(Math.round(hi * 1000) / 1000));
}
if (boardRows.length) {
  const t = el("table", {id: "dashboard-table"}, dash);
  const hr = el("tr", {}, t); ["gate", "field", "value", "band", "healthy", "warning", "critical", "why", "examples"].forEach(x => el("th", {}, hr, x));
  for (const row of boardRows) {
    const r = el("tr", {}, t);
    el("td", {}, r, row.name); el("td", {}, r, row.field === null ? "" : String(row.field));
    el("td", {}, r, row.value === null ? "n/a" : String(row.value));
    el("td", {class: "band-" + (row.band === "n/a" ? "na" : row.band)}, r, row.band);
    for (const k of ["healthy", "warning", "critical"]) el("td", {}, r, row.bounds[k] || "");
    el("td", {}, r, row.reason || "");
    const ids = [];
    for (const ex of row.examples) { if (ex.sample_id !== undefined) ids.push(ex.sample_id); else if (ex.sample_ids) ids.push(...ex.sample_ids); }
    el("td", {class: "muted"}, r, ids.slice(0, 3).join(", "));
  }
  for (const row of boardRows) {
    const title = row.metric + " [" + row.band + "]";
    if (row.value !== null) gauge(card("dashboard-plots", title), row);
    const d = row.details || {};
    if (row.name === "anchor_share" && d.top) {
      const top = d.top.slice(0, 20);
      bars(card("dashboard-plots", row.metric + ": top anchors, share of records"), top.map(x => x.anchor), [top.map(x => x.share)], ["#8b5cf6"], "anchor-shares");
    } else if (row.name === "opening_entropy" && d.distribution) {
      const k = Object.keys(d.distribution);
      bars(card("dashboard-plots", row.metric + ": openings"), k, [k.map(x => d.distribution[x])], ["#0ea5e9"], "opening-bars");
    } else if (row.name === "pollyanna" && d.score_counts) {
      bars(card("dashboard-plots", row.metric + ": records by polarity score"), ["<" + d.score_edges[0]].concat(d.score_edges.map(e => "≥" + e)), [d.score_counts], ["#f97316"], "pollyanna-hist");
    } else if (row.name === "fairness" && d.rows) {
      const rs = d.rows;
      bars(card("dashboard-plots", row.metric + " (bars: observed, grey: expected)"), rs.map(x => x.value), [rs.map(x => x.observed_share), rs.map(x => x.expected_share)], ["#10b981", "#9ca3af"], "fairness-bars");
    }
  }
} else el("p", {class: "muted"}, dash, "No dashboard or safety gates declared.");
document.body.setAttribute("data-rendered", "yes");
</script></body></html>
"""
