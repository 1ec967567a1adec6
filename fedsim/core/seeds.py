"""Derived seeds: every random draw in a run is keyed by the scenario seed and its purpose."""

from __future__ import annotations

import hashlib

__all__ = ["derive_seed"]


def derive_seed(seed: int, *keys: str | int) -> int:
    """A 32-bit seed from ``seed`` and the keys, independent of Python's hash randomisation.

    ``derive_seed(s, "train", round, device)`` is the same in every process and every run.
    """
    text = "/".join(str(k) for k in (seed, *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
