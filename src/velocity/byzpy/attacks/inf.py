"""ByzPy's ``InfAttack`` on :class:`velocity.attacks.Inf`."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from velocity._validation import Integer, check_value
from velocity.attacks import Inf
from velocity.byzpy._tensors import stack
from velocity.byzpy.attacks._craft import craft_one
from velocity.byzpy.attacks.base import Attack
from velocity.errors import ValidationError

__all__ = ["InfAttack"]


class InfAttack(Attack):
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

    uses_honest_grads: bool = True

    def __init__(self, *, chunk_size: int = 8192) -> None:
        self.chunk_size: int = check_value("InfAttack", "chunk_size", chunk_size, Integer(low=1))

    def apply(
        self,
        *,
        model: nn.Module | None = None,
        x: Tensor | None = None,
        y: Tensor | None = None,
        honest_grads: list[Any] | None = None,
        base_grad: Any | None = None,
    ) -> Any:
        if not honest_grads:
            raise ValidationError("InfAttack requires honest_grads (a non-empty list)")
        honest, layout = stack(honest_grads, "honest_grads", "InfAttack")
        return layout.restore(craft_one(Inf(), honest))
