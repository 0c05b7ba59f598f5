"""The store: run dirs, part files and the public reader of both."""

from datamill.store.reader import iter_records, merge, write_in_order
from datamill.store.rundir import Part, RunDir

__all__ = ["Part", "RunDir", "iter_records", "merge", "write_in_order"]
