"""ByzPy's ``InfAttack`` on :class:`velocity.attacks.Inf`."""

from __future__ import annotations

from torch import Tensor

from velocity._validation import Integer, check_value
from velocity.attacks import Inf
from velocity.byzpy.attacks._craft import FromHonestGrads, craft_one

__all__ = ["InfAttack"]


class InfAttack(FromHonestGrads):
    """A vector of ``+inf``, shaped like the honest gradients.

    Parameters
    ----------
    chunk_size : int, default 8192
        A scheduling hint kept for ByzPy compatibility (positive int).

    Examples
    --------
    >>> import torch
    >>> InfAttack().apply(honest_grads=[torch.zeros(2)]).tolist()
    [inf, inf]

    Notes
    -----
    Crafted by :class:`velocity.attacks.Inf`. Every :mod:`velocity.byzpy` aggregator drops
    such vectors and counts them against its ``f`` (``docs/kernels.md``).
    """

    def __init__(self, *, chunk_size: int = 8192) -> None:
        self.chunk_size: int = check_value("InfAttack", "chunk_size", chunk_size, Integer(low=1))

    def _craft(self, honest: Tensor) -> Tensor:
        return craft_one(Inf(), honest)
