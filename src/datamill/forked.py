"""Run a function in a fresh forked process and return its (picklable) result (a leaf module).

Benchmarks and probes use it so that peak RSS and CPU time are the measured code's own, and so
that native libraries loaded by the measurement (llama.cpp) never live in the parent.
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Any, TypeVar

T = TypeVar("T")


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies, so a killed parent leaves no orphans."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass  # not Linux: an orphan finishes its work and exits


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
