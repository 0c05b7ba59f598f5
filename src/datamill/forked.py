"""Run a function in a fresh forked process and return its (picklable) result (a leaf module).

Benchmarks and probes use it so that peak RSS and CPU time are the measured code's own, and so
that native libraries loaded by the measurement (llama.cpp) never live in the parent.
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Any, TypeVar

T = TypeVar("T")


def in_fork(fn: Any, *args: Any, timeout_s: float | None = None) -> Any:
    """``fn(*args)`` in a forked child; raises RuntimeError if the child dies without answering."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)

    def target() -> None:
        child.send(fn(*args))

    proc = ctx.Process(target=target)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout_s):
            raise RuntimeError(f"{getattr(fn, '__name__', fn)}: no answer within {timeout_s}s")
        return parent.recv()
    except EOFError:
        raise RuntimeError(f"{getattr(fn, '__name__', fn)}: the child process died (exit {proc.exitcode})") from None
    finally:
        proc.join()
