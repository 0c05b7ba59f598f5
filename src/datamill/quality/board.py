"""The dashboard and safety gates of one verify pass: fed each record, graded at the end.

verify starts the board with :meth:`Board.run_beside`: a forked process reads the source itself (a
second core; no record crosses a pipe) and feeds every record, in order, to the streaming meters
and checkers, and one reservoir per sample size keeps a deterministic sample (a fixed seed, records
in slot order) of the text fields the sampled meters read, each cut at ``SAMPLE_CHARS``.
:meth:`Board.finish` collects and grades each reading:

- a dashboard metric against its two bounds: ``healthy`` / ``warning`` / ``critical``; a critical
  one fails with the gate's severity (``fail`` unless it says ``warn``), a warning one warns;
- a safety gate against its limit: ``healthy`` or ``critical``;
- a reading with no value is ``n/a``: a failure when the gate cannot be measured (no such field),
  a pass with its reason when it does not apply (no attempt log on a plain file).
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from datamill.errors import DatamillError, InputError
from datamill.forked import die_with_parent
from datamill.quality.dashboard import AnchorMeter, AnchorTally, Meter, Reading, RepairRate, Skips, meters
from datamill.quality.safety import CHECKERS, Checker
from datamill.recipe import gatekinds
from datamill.recipe.model import GateSpec

SAMPLE_CHARS = 1500  # as verify's own text metrics: the cost of a sample is flat in text length too
BATCH = 1024  # records parsed per counting call in the board's process


class _Reservoir:
    """A uniform sample of the records holding one of ``fields``: flat in N, the same every run."""

    def __init__(self, size: int) -> None:
        self.fields: list[str] = []
        self.items: list[tuple[Any, dict[str, str]]] = []
        self.skips = Skips(size, size)

    def add(self, rec: dict[str, Any], sid: Any) -> None:
        for f in self.fields:
            if isinstance(rec.get(f), str):
                break
        else:
            return
        at = self.skips.place()
        if at is None:
            return
        item = (sid, {f: v[:SAMPLE_CHARS] for f in self.fields if isinstance(v := rec.get(f), str)})
        if at == len(self.items):
            self.items.append(item)
        else:
            self.items[at] = item


def label(spec: GateSpec) -> str:
    return f"dashboard {spec.dashboard}" if spec.dashboard else f"safety {spec.safety}"


def metric_name(spec: GateSpec, field: str | None) -> str:
    if spec.safety is not None:
        return f"safety.{spec.safety}" + (f".{spec.attribute}" if spec.safety == "fairness" else "")
    name = f"dashboard.{spec.dashboard}"
    if spec.dashboard == "repair_rate":
        return name + (f".{','.join(spec.field_list)}" if spec.field_list else "")
    return f"{name}.{field}" + (f".{spec.by}" if spec.dashboard == "anchor_region_mi" else "")


def _fmt(x: float) -> str:
    return f"{x:g}"


def bands_of(spec: GateSpec) -> tuple[str, float, float]:
    """(direction, warn, critical) of a dashboard gate; a safety gate's limit is both bounds."""
    if spec.dashboard is not None:
        warn, critical = gatekinds.bounds(spec)
        return gatekinds.DASHBOARD[spec.dashboard].direction, warn, critical
    limit = float(gatekinds.option(spec, "tolerance" if spec.safety == "fairness" else "max_share"))
    return "lower", limit, limit


def bounds_text(spec: GateSpec) -> dict[str, str]:
    direction, warn, critical = bands_of(spec)
    if spec.safety is not None:
        return {"healthy": f"≤ {_fmt(warn)}", "critical": f"> {_fmt(critical)}"}
    if direction == "higher":
        return {
            "healthy": f"> {_fmt(warn)}",
            "warning": f"{_fmt(critical)} – {_fmt(warn)}",
            "critical": f"< {_fmt(critical)}",
        }
    return {
        "healthy": f"< {_fmt(warn)}",
        "warning": f"{_fmt(warn)} – {_fmt(critical)}",
        "critical": f"> {_fmt(critical)}",
    }


def grade(spec: GateSpec, reading: Reading) -> str:
    """``healthy`` / ``warning`` / ``critical``, or ``n/a`` when there is no value."""
    v = reading.value
    if v is None:
        return "n/a"
    if reading.error:
        return "critical"
    direction, warn, critical = bands_of(spec)
    if spec.safety is not None:
        return "healthy" if v <= critical else "critical"
    if direction == "higher":
        return "healthy" if v > warn else "critical" if v < critical else "warning"
    return "healthy" if v < warn else "critical" if v > critical else "warning"


class Board:
    """Every dashboard and safety gate of a verify pass."""

    def __init__(self, gates: list[GateSpec], base_dir: Path, run_dir: Path | None = None) -> None:
        self.entries: list[tuple[GateSpec, str | None, Meter | Checker]] = []
        self.reservoirs: dict[int, _Reservoir] = {}
        self.streaming: list[Meter | Checker | AnchorTally] = []
        tallies: dict[str, AnchorTally] = {}
        for i, spec in enumerate(gates):
            if spec.dashboard is None and spec.safety is None:
                continue
            problem = gatekinds.check_files(spec, base_dir)
            if problem is not None:
                raise InputError(f"verify: gates[{i}] ({label(spec)}): {problem[0]}: {problem[1]}")
            if spec.safety is not None:
                checker = CHECKERS[spec.safety](spec, base_dir)
                self.entries.append((spec, None, checker))
                self.streaming.append(checker)
                continue
            for meter in meters(spec):
                if isinstance(meter, RepairRate):
                    meter.attempts = run_dir / "logs" / "attempts.jsonl" if run_dir is not None else None
                self.entries.append((spec, meter.field, meter))
                if meter.sample_size:
                    res = self.reservoirs.get(meter.sample_size) or _Reservoir(meter.sample_size)
                    self.reservoirs[meter.sample_size] = res
                    if meter.field and meter.field not in res.fields:
                        res.fields.append(meter.field)
                if isinstance(meter, AnchorMeter):
                    assert meter.field is not None
                    if meter.field not in tallies:
                        tallies[meter.field] = AnchorTally(meter.field)
                        self.streaming.insert(0, tallies[meter.field])  # before the meters reading its lists
                    meter.tally = tallies[meter.field]
                if meter.streaming:
                    self.streaming.append(meter)
        self.active = bool(self.entries)
        self.beside: tuple[Any, Any] | None = None  # (process, pipe) of run_beside

    def run_beside(self, lines: Callable[[], Iterable[bytes]]) -> None:
        """Count every record in a forked process that reads ``lines()`` itself; :meth:`finish`
        collects its result. Call before starting threads (a fork copies only the calling thread)."""
        ctx = mp.get_context("fork")
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=self._beside, args=(lines, send), daemon=True)
        proc.start()
        send.close()
        self.beside = (proc, recv)

    def _beside(self, lines: Callable[[], Iterable[bytes]], send: Any) -> None:
        die_with_parent()
        try:
            batch: list[dict[str, Any]] = []
            for line in lines():
                try:
                    rec = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # verify's own pass names the line
                if isinstance(rec, dict):
                    batch.append(rec)
                if len(batch) >= BATCH:
                    self._count(batch)
                    batch = []
            self._count(batch)
            out: tuple[str, Any] = ("ok", self._grade())
        except DatamillError as exc:
            out = ("error", (type(exc).__name__, str(exc)))
        except Exception as exc:  # a bug in a meter: said, never a silent hang
            out = ("error", ("RuntimeError", f"the dashboard and safety gates failed: {exc!r}"))
        send.send(out)
        send.close()

    def abandon(self) -> None:
        """Stop the process of :meth:`run_beside` (verify failed before the end)."""
        if self.beside is not None:
            proc, recv = self.beside
            proc.kill()
            proc.join()
            recv.close()
            self.beside = None

    def _count(self, batch: list[dict[str, Any]]) -> None:
        streaming, reservoirs = self.streaming, list(self.reservoirs.values())
        for rec in batch:
            sid = rec.get("sample_id")
            cache: dict[str, Any] = {}  # what several meters read of this record (anchor lists), once
            for m in streaming:
                m.add(rec, sid, cache)
            for res in reservoirs:
                res.add(rec, sid)

    def finish(self) -> dict[str, Any]:
        """``dashboard`` and ``safety`` rows, the gate results and the flat metrics they add."""
        if self.beside is not None:
            proc, recv = self.beside
            self.beside = None
            try:
                status, value = recv.recv()
            except EOFError:
                proc.join()
                raise RuntimeError(
                    f"verify: the dashboard and safety gates' process died (exit {proc.exitcode})"
                ) from None
            finally:
                recv.close()
            proc.join()
            if status == "error":
                kind, message = value
                raise (InputError(message) if kind != "RuntimeError" else RuntimeError(message))
            return dict(value)
        return self._grade()

    def _grade(self) -> dict[str, Any]:
        dashboard: list[dict[str, Any]] = []
        safety: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        flat: dict[str, Any] = {}
        for spec, field, m in self.entries:
            if isinstance(m, Meter):
                res = self.reservoirs.get(m.sample_size)
                reading = m.finish(res.items if res is not None else [])
            else:
                reading = m.finish()
            band = grade(spec, reading)
            metric = metric_name(spec, field)
            direction, warn, critical = bands_of(spec)
            failed = band in ("warning", "critical") or (band == "n/a" and reading.error)
            severity = "warn" if band == "warning" else spec.severity
            row: dict[str, Any] = {
                "name": spec.dashboard or spec.safety,
                "field": field,
                "metric": metric,
                "value": reading.value,
                "band": band,
                "direction": direction,
                "warn": warn,
                "critical": critical,
                "bounds": bounds_text(spec),
                "severity": severity,
                "passed": not failed,
                "reason": reading.reason,
                "items": reading.items,
                "sampled": reading.sampled,
                "details": reading.details,
                "examples": reading.examples,
            }
            (dashboard if spec.dashboard is not None else safety).append(row)
            if reading.value is not None:
                flat[metric] = reading.value
            results.append(
                {
                    "metric": metric,
                    "min": None,
                    "max": None,
                    "severity": severity,
                    "value": reading.value,
                    "passed": not failed,
                    "reason": reading.reason if failed or band == "n/a" else "",
                    "band": band,
                    "bounds": row["bounds"],
                    "examples": reading.examples,
                }
            )
        return {"dashboard": dashboard, "safety": safety, "gates": results, "metrics": flat}


def base_dir_of(manifest: dict[str, Any] | None) -> Path:
    """Where a gate's relative paths resolve: the recipe's folder for a run dir, else the working dir."""
    file = (manifest or {}).get("recipe_file")
    if isinstance(file, str) and file and not file.startswith("<"):
        return Path(file).expanduser().parent
    return Path.cwd()
