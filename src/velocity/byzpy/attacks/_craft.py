"""One crafted vector from a :mod:`velocity.attacks` update attack (private)."""

from __future__ import annotations

import torch
from torch import Tensor

from velocity.attacks import AttackContext, UpdateAttack

__all__ = ["craft_one"]


def craft_one(
    attack: UpdateAttack,
    honest: Tensor,
    own: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The ``(d,)`` row ``attack`` crafts for one adversary from ``honest`` ``(h, d)`` (and its
    ``own`` ``(1, d)`` update); float32, as :mod:`velocity.attacks` crafts every row."""
    gen = generator if generator is not None else torch.Generator()
    ctx = AttackContext(honest=honest, own=own, num_byzantine=1, generator=gen)
    return attack.craft(ctx)[0]
