"""The command line: ``datamill <verb>``."""

from datamill.cli.main import entry, main

__all__ = ["entry", "main"]
