"""Benchmarks: each measures datamill and the bare floor beside it, in the same run."""
