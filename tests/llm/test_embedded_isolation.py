"""Issue 10: the embedded model is built without the miscompiled AMX path, runs in a child process,
and a native crash there is one clear line, failed slots with the reason, committed parts intact."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import orjson
import pytest

from datamill.llm.backends.embedded import EmbeddedBackend, default_threads, usable_cores
from datamill.llm.backends.embedded_worker import CRASH_ENV
from helpers import cli_env

REPRO = Path(__file__).resolve().parents[3] / "shared" / "repro" / "amx-tilecfg.c"
AMX_OPS = ("ldtilecfg", "tileloadd", "tdpbssd", "tdpbsud", "tdpbusd", "tdpbuud", "tdpbf16ps", "tilestored")


def _amx_instructions(obj: Path) -> set[str]:
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(obj)], capture_output=True, text=True, check=True)
    return {op for op in AMX_OPS if f"\t{op}" in out.stdout or f" {op} " in out.stdout}


def _ggml_cpu_library() -> Path:
    import llama_cpp

    libs = sorted((Path(llama_cpp.__file__).parent / "lib").glob("libggml-cpu*.so*"))
    assert libs, "llama_cpp/lib has no libggml-cpu: not the build this project makes"
    return libs[0]


@pytest.mark.skipif(shutil.which("objdump") is None or shutil.which("gcc") is None, reason="needs binutils and gcc")
def test_built_library_has_no_amx_tile_code(tmp_path: Path) -> None:
    # The detector finds AMX code where it exists: the shared reproducer, compiled as ggml's
    # native build would on an AMX host (any host can compile it; only AMX hosts can run it).
    src = REPRO if REPRO.is_file() else None
    if src is None:
        src = tmp_path / "tile.c"
        src.write_text("#include <immintrin.h>\nvoid f(const void *c){ _tile_loadconfig(c); }\n")
    obj = tmp_path / "amx.o"
    subprocess.run(["gcc", "-O3", "-mamx-tile", "-mamx-int8", "-c", str(src), "-o", str(obj)], check=True)
    assert "ldtilecfg" in _amx_instructions(obj)
    # ... and the library the embedded model runs on has none: no AMX path to miscompile.
    assert _amx_instructions(_ggml_cpu_library()) == set()


def test_model_runs_in_a_child_process_with_the_threads_it_is_given() -> None:
    backend = EmbeddedBackend(threads=1)
    try:
        info = backend.system_info()
        assert info["threads"] == 1
        assert "AMX_INT8 = 1" not in info["system_info"]
        assert backend._proc is not None and backend._proc.proc.pid > 0
    finally:
        backend.close()
    assert default_threads(1) == usable_cores()
    assert default_threads(2) == max(1, usable_cores() // 2)


RECIPE = """
name: crashy
seed: 5
size: 8
columns:
  n: {expr: "slot"}
  line: {llm: {prompt: "Item {{ n }}: say hello in three words.", max_tokens: 8, temperature: 0.0}}
output: {part_size: 4}
"""


def _run(tmp_path: Path, marker: str) -> tuple[subprocess.CompletedProcess, Path]:
    import sys

    recipe = tmp_path / "crashy.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "run"
    env = cli_env() | {CRASH_ENV: marker}
    res = subprocess.run(
        [sys.executable, "-m", "datamill", "run", str(recipe), "--out", str(out), "--workers", "1"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    return res, out


def _events(out: Path) -> list[dict]:
    return [orjson.loads(x) for x in (out / "logs" / "run.jsonl").read_bytes().splitlines()]


def test_a_native_crash_fails_its_slot_with_one_line_and_keeps_committed_parts(tmp_path: Path, run_cli) -> None:
    res, out = _run(tmp_path, "Item 5:")
    assert res.returncode == 1, res.stdout + res.stderr  # never 139, never 0
    errors = [x for x in res.stderr.splitlines() if x.strip() and not x.startswith("[datamill]")]
    assert len(errors) == 1, res.stderr
    assert errors[0].startswith("error: embedded model crashed (SIGSEGV) in llama.cpp"), errors[0]
    assert "docs/llm.md#troubleshooting" in errors[0]
    # The crashed slot is failed with the reason; the child restarts and the others are answered.
    failed = [e for e in _events(out) if e["event"] == "slot_failed"]
    assert [e["slot"] for e in failed] == [5]
    assert "model_crashed" in failed[0]["reason"] and "SIGSEGV" in failed[0]["reason"]
    recs = [orjson.loads(x) for x in run_cli("cat", str(out)).stdout.splitlines()]
    assert [r["n"] for r in recs] == [0, 1, 2, 3, 4, 6, 7]
    assert all(isinstance(r["line"], str) and r["line"] for r in recs)
    assert len(list((out / "parts").glob("*.meta.json"))) == 2


def test_a_model_that_always_crashes_is_given_up_after_three_and_says_so(tmp_path: Path) -> None:
    res, out = _run(tmp_path, "say hello")
    assert res.returncode == 1, res.stdout + res.stderr
    errors = [x for x in res.stderr.splitlines() if x.strip() and not x.startswith("[datamill]")]
    assert len(errors) == 1 and "embedded model crashed (SIGSEGV)" in errors[0], res.stderr
    failed = [e for e in _events(out) if e["event"] == "slot_failed"]
    assert sorted(e["slot"] for e in failed) == list(range(8))
    assert sum("not restarted" in e["reason"] for e in failed) == 5  # slots after the third crash fail fast


def test_doctor_reports_cpu_build_and_one_generation(run_cli, tmp_path: Path) -> None:
    report = tmp_path / "doctor.json"
    res = run_cli("doctor", "--json", str(report))
    assert res.returncode == 0, res.stdout + res.stderr
    r = orjson.loads(report.read_bytes())
    assert set(r["cpu_features"]) >= {"avx2", "avx512f", "amx_tile", "amx_int8"}
    assert "CPU" in r["system_info"] and r["generation"]["completion_tokens"] > 0
    assert r["risks"] == [] and r["ok"] is True
    assert "ok: the embedded model runs on this machine" in res.stdout
