"""``datamill doctor``: is the embedded model sound on this machine?

Reads the CPU features that decide which llama.cpp kernels run (AVX2, AVX-512, AMX on x86-64;
NEON/SVE on aarch64), asks the model process for llama.cpp's build info, and runs one short
generation in that child process, so a crash is reported, not suffered.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

from datamill.errors import DatamillError

FEATURES = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "amx_tile", "amx_int8", "amx_bf16", "asimd", "sve")
REBUILD = (
    "rebuild llama-cpp-python portably, bypassing pip's wheel cache: "
    "CMAKE_ARGS='-DGGML_NATIVE=OFF' pip install --no-cache-dir --force-reinstall --no-deps llama-cpp-python==0.3.36 "
    "(`make demo` and `make test` do this by themselves)"
)


def cpu_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, bool]:
    """The CPU flags that matter to llama.cpp, from /proc/cpuinfo (all False where it is absent)."""
    flags: set[str] = set()
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                flags.update(value.split())
    except OSError:
        pass
    return {f: f in flags for f in FEATURES}


def build_risks(system_info: str, features: dict[str, bool]) -> list[str]:
    """Known-bad combinations of build and CPU, each with what to do."""
    risks = []
    if "AMX_INT8 = 1" in system_info or "AMX_TILE = 1" in system_info:
        risks.append(
            "this llama.cpp build has AMX kernels, which GCC 12 miscompiles (SIGSEGV on the first decode); " + REBUILD
        )
    if platform.machine() in ("x86_64", "AMD64") and not features.get("avx2"):
        risks.append("this CPU has no AVX2: the portable build needs it; build with -DGGML_AVX2=OFF")
    return risks


def run_doctor(max_tokens: int = 16) -> dict[str, Any]:
    """CPU features, llama.cpp's build, and one short generation in a child process."""
    import orjson

    from datamill.llm.backends.embedded import EmbeddedBackend, usable_cores
    from datamill.llm.types import parse_completion

    features = cpu_features()
    result: dict[str, Any] = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cores": usable_cores(),
        "cpu_features": features,
        "llama_cpp_version": None,
        "system_info": None,
        "threads": None,
        "generation": None,
        "ok": False,
        "risks": [],
        "advice": None,
    }
    backend = EmbeddedBackend()
    try:
        info = backend.system_info()
        result.update(llama_cpp_version=info["version"], system_info=info["system_info"], threads=info["threads"])
        result["risks"] = build_risks(info["system_info"], features)
        payload = {
            "messages": [{"role": "user", "content": "Name three colours."}],
            "temperature": 0.0,
            "max_tokens": max_tokens,
            "seed": 0,
        }
        t0 = time.perf_counter()
        import asyncio

        body = asyncio.run(backend.complete(payload))
        seconds = time.perf_counter() - t0
        resp = parse_completion(body)
        result["generation"] = {
            "text": resp.text,
            "completion_tokens": resp.completion_tokens,
            "seconds": round(seconds, 3),
            "tokens_per_s": round(resp.completion_tokens / seconds, 1) if seconds > 0 else None,
        }
        result["ok"] = bool(resp.completion_tokens)
        orjson.dumps(result)  # everything above must be JSON for --json
    except DatamillError as exc:
        result["error"] = str(exc)
        result["advice"] = REBUILD if "crashed" in str(exc) else "pip install 'datamill[local]'"
    finally:
        backend.close()
    return result
