"""Derived randomness: every draw comes from ``(seed, round, client, purpose)``.

A run never touches the global random state. Each random decision — which clients a round
selects, whether a client drops out, its delay, the order of its mini-batches — draws from its
own generator, seeded by hashing the run seed with the keys that identify the decision. The
result does not depend on how many clients are simulated, in which order, on which thread or
backend: client 7's batches in round 3 are the same whether it trains alone or among 10,000.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

__all__ = ["derive_seed", "numpy_rng", "torch_generator"]

Key = int | str


def derive_seed(seed: int, *keys: Key) -> int:
    """A 63-bit seed from ``seed`` and ``keys`` (SHA-256 of their canonical text).

    >>> derive_seed(0, 1, "train") == derive_seed(0, 1, "train")
    True
    >>> derive_seed(0, 1, "train") == derive_seed(0, 2, "train")
    False
    """
    text = "\x1f".join([str(int(seed)), *(f"{type(k).__name__}:{k}" for k in keys)])
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def torch_generator(seed: int, *keys: Key, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` seeded with :func:`derive_seed` (``seed``, ``keys``)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, *keys))
    return gen


def numpy_rng(seed: int, *keys: Key) -> np.random.Generator:
    """A numpy ``Generator`` (PCG64) seeded with :func:`derive_seed` (``seed``, ``keys``)."""
    return np.random.Generator(np.random.PCG64(derive_seed(seed, *keys)))
