"""The process that owns the embedded model: ``python -m datamill.llm.backends.embedded_worker``.

llama.cpp is native code whose correctness depends on the CPU and the compiler that built it
(issue 10: a miscompiled AMX kernel segfaults on the first decode). The model therefore lives in
this child, never in a run's own process: if llama.cpp crashes, the parent sees the child's
signal and fails the request with one clear line instead of dying with it.

Protocol, one line each way, over the child's original stdout (fd 1 is pointed at stderr so that
nothing llama.cpp prints can corrupt it):

- child → parent, once: ``READY <json: system_info, threads, version>`` or ``ERR <json>``;
- parent → child: ``<json: {"op": "complete", "payload": {...}}>`` or ``{"op": "tokenize", "text": "..."}``;
- child → parent: ``OK <completion body JSON>``, ``TOK <json list>`` or ``ERR <json: kind, message>``.

EOF on stdin ends the child (a parent that died closes it).
"""

from __future__ import annotations

import faulthandler
import os
import sys
from typing import Any, BinaryIO

import orjson

# Test seam: a prompt containing this text makes the child crash for real (a NULL read: SIGSEGV),
# so the crash path is exercised end to end on any host.
CRASH_ENV = "DATAMILL_EMBEDDED_CRASH_ON"


def _send(out: BinaryIO, tag: bytes, body: bytes) -> None:
    out.write(tag + b" " + body + b"\n")
    out.flush()


def _err(out: BinaryIO, kind: str, message: str) -> None:
    _send(out, b"ERR", orjson.dumps({"kind": kind, "message": message}))


def _chat_kwargs(payload: dict[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "messages": payload["messages"],
        "temperature": payload.get("temperature", 0.7),
        "max_tokens": payload.get("max_tokens", 256),
    }
    if "seed" in payload:
        kwargs["seed"] = payload["seed"]
    fmt = payload.get("response_format")
    if fmt:
        # llama.cpp turns a JSON schema into a grammar: constrained decoding, not a hint.
        if fmt.get("type") == "json_schema":
            kwargs["response_format"] = {"type": "json_object", "schema": fmt["json_schema"]["schema"]}
        else:
            kwargs["response_format"] = fmt
    return kwargs


def _maybe_crash(payload: dict[str, Any]) -> None:
    marker = os.environ.get(CRASH_ENV)
    if marker and any(marker in str(m.get("content") or "") for m in payload.get("messages", [])):
        import ctypes

        ctypes.string_at(0)  # SIGSEGV, as a native bug would


def main(argv: list[str]) -> int:
    model_path, n_ctx, threads = argv[0], int(argv[1]), int(argv[2])
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    faulthandler.enable()  # a crash leaves the Python stack on stderr, which the parent keeps
    try:
        import llama_cpp

        llm = llama_cpp.Llama(
            model_path=model_path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False, seed=0
        )
        info = llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()
    except Exception as exc:
        _err(out, "load_failed", f"{type(exc).__name__}: {exc}")
        return 1
    _send(out, b"READY", orjson.dumps({"system_info": info, "threads": threads, "version": llama_cpp.__version__}))
    for line in sys.stdin.buffer:
        try:
            req = orjson.loads(line)
        except orjson.JSONDecodeError:
            _err(out, "bad_request", "unreadable request line")
            continue
        try:
            if req.get("op") == "tokenize":
                ids = llm.tokenize(req["text"].encode("utf-8"), add_bos=False, special=False)
                _send(out, b"TOK", orjson.dumps(list(ids)))
                continue
            payload = req["payload"]
            _maybe_crash(payload)
            _send(out, b"OK", orjson.dumps(llm.create_chat_completion(**_chat_kwargs(payload))))
        except ValueError as exc:  # e.g. the prompt does not fit the context
            _err(out, "bad_request", f"llama.cpp: {exc}")
        except Exception as exc:
            _err(out, "server_error", f"llama.cpp: {type(exc).__name__}: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
