"""Seeds and ids: the only sources of a slot's randomness and identity (a leaf module)."""

from __future__ import annotations

import hashlib


def slot_seed(recipe_seed: int, slot: int, attempt: int = 0) -> int:
    """A slot's randomness: a 63-bit function of (recipe seed, slot, attempt) and nothing else.

    63 bits, so the seed fits a signed 64-bit integer wherever it is written (Parquet, Arrow).
    """
    digest = hashlib.blake2b(f"{recipe_seed}:{slot}:{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def key_seed(recipe_seed: int, key: str, attempt: int = 0) -> int:
    """A keyed source row's randomness: like :func:`slot_seed`, from the row's key, not its place."""
    digest = hashlib.blake2b(f"{recipe_seed}:key:{key}:{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def sub_seed(seed: int, label: str) -> int:
    """An independent 64-bit seed for one consumer (a column, a permutation) of ``seed``."""
    digest = hashlib.blake2b(f"{seed}:{label}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def sample_id(name: str, seed: int, slot: int, index: int) -> str:
    """Stable, unique id of the ``index``-th record of ``slot``: ``name:seed:slot:index``."""
    return f"{name}:{seed}:{slot}:{index}"


def parse_sample_id(sid: str) -> tuple[str, int, int, int]:
    """Inverse of :func:`sample_id` (names may contain ':'; the last three fields are numbers)."""
    name, seed, slot, index = sid.rsplit(":", 3)
    return name, int(seed), int(slot), int(index)
