"""``datamill extract contextual``: process targets with character and token offsets.

For each item: the teacher text without markup, and every marked span — tool names, JSON
arguments, integration spans — with ``[char_start, char_end)`` in that clean text and
``[token_start, token_end)``: the tokens whose offset-mapping ranges overlap the span.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from datamill.errors import InputError
from datamill.recipes.contextual import parse_teacher
from datamill.store import atomic
from datamill.store.reader import iter_dataset_lines
from datamill.tokenize import TokenCounter

BATCH = 512


def token_range(offsets: list[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """Tokens whose ``[s, e)`` overlaps ``[start, end)``."""
    first = next((i for i, (s, e) in enumerate(offsets) if e > start and s < end), None)
    if first is None:
        return (0, 0)
    last = first
    while last + 1 < len(offsets) and offsets[last + 1][0] < end:
        last += 1
    return (first, last + 1)


def _process(batch: list[dict[str, Any]], counter: TokenCounter) -> list[dict[str, Any]]:
    cleaned = [parse_teacher(r["teacher_text"]) for r in batch]
    prompt_tokens = counter.count([r["prompt"] for r in batch])
    encodings = counter.encode_batch_with_offsets([c for c, _ in cleaned])
    out = []
    for rec, (clean, spans), enc, ptoks in zip(batch, cleaned, encodings, prompt_tokens, strict=True):
        offsets = [tuple(o) for o in enc.offsets]
        for span in spans:
            span["token_start"], span["token_end"] = token_range(offsets, span["char_start"], span["char_end"])  # type: ignore[arg-type]
        out.append({
            "sample_id": rec["sample_id"],
            "shard_index": rec.get("shard_index"),
            "scenario": rec["scenario"],
            "control": rec["control"],
            "negative_control": rec["negative_control"],
            "long_context": rec["long_context"],
            **({"question_template": rec["question_template"]} if "question_template" in rec else {}),
            "prompt": rec["prompt"],
            "teacher_text": rec["teacher_text"],
            "teacher_clean": clean,
            "prompt_tokens": ptoks,
            "teacher_tokens": len(enc.ids),
            "spans": spans,
        })  # fmt: skip
    return out


def extract(source: str | Path, out: str | Path, tokenizer: str | Path | None = None) -> int:
    """Write the extracted items of ``source`` (a run dir or a JSONL file) to ``out``; returns the count."""
    if not Path(source).exists():
        raise InputError(f"--in: {source}: no such run dir or file")
    counter = TokenCounter(tokenizer)
    final = Path(out)
    if not final.parent.is_dir():
        raise InputError(f"--out: {final.parent}: no such directory")
    tmp = atomic.temp_path(final)
    n = 0
    try:
        with open(tmp, "wb") as f:
            batch: list[dict[str, Any]] = []
            for line in iter_dataset_lines(source):
                rec = orjson.loads(line)
                if "teacher_text" not in rec or "prompt" not in rec:
                    raise InputError(f"--in: {source}: record {rec.get('sample_id')} is not a contextual item")
                batch.append(rec)
                if len(batch) >= BATCH:
                    for item in _process(batch, counter):
                        f.write(orjson.dumps(item, option=orjson.OPT_APPEND_NEWLINE))
                    n += len(batch)
                    batch.clear()
            for item in _process(batch, counter) if batch else []:
                f.write(orjson.dumps(item, option=orjson.OPT_APPEND_NEWLINE))
            n += len(batch)
            f.flush()
            os.fsync(f.fileno())
        atomic.publish(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return n
