"""Executors: where slot ranges run (local process pool; Ray in a later layer)."""

from datamill.engine.executors.base import Executor, RangeJob
from datamill.engine.executors.local import LocalExecutor

__all__ = ["Executor", "LocalExecutor", "RangeJob"]
