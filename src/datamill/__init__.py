"""datamill: synthetic datasets at any size, reproducibly, fast, with their quality measured."""

__version__ = "0.1.0"

__all__ = ["__version__"]
