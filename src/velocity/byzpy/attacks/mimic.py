"""ByzPy's ``MimicAttack`` on :class:`velocity.attacks.Mimic`."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from velocity._validation import Integer, check_value
from velocity.attacks import Mimic
from velocity.byzpy._tensors import stack
from velocity.byzpy.attacks._craft import craft_one
from velocity.byzpy.attacks.base import Attack
from velocity.errors import ValidationError

__all__ = ["MimicAttack"]


class MimicAttack(Attack):
    """Mimicry (Karimireddy, He & Jaggi 2022): send honest node ``epsilon``'s gradient.

    Parameters
    ----------
    epsilon : int, default 0
        Which honest gradient to copy, ``>= 0``; a call needs ``epsilon < len(honest_grads)``.
    chunk_size : int, default 8192
        A scheduling hint kept for ByzPy compatibility (positive int).

    Examples
    --------
    >>> import torch
    >>> MimicAttack(epsilon=1).apply(honest_grads=[torch.zeros(2), torch.ones(2)]).tolist()
    [1.0, 1.0]

    Notes
    -----
    Crafted by :class:`velocity.attacks.Mimic`: a new vector (ByzPy returns the honest
    object itself) with the input's dtype and float32 precision.
    """

    uses_honest_grads: bool = True

    def __init__(self, epsilon: int = 0, *, chunk_size: int = 8192) -> None:
        self.epsilon: int = check_value("MimicAttack", "epsilon", epsilon, Integer(low=0))
        self.chunk_size: int = check_value("MimicAttack", "chunk_size", chunk_size, Integer(low=1))

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
            raise ValidationError("MimicAttack requires honest_grads (a non-empty list)")
        honest, layout = stack(honest_grads, "honest_grads", "MimicAttack")
        if self.epsilon >= honest.shape[0]:
            raise ValidationError(
                f"MimicAttack: epsilon must be < the number of honest_grads; "
                f"got epsilon={self.epsilon}, n={honest.shape[0]}"
            )
        return layout.restore(craft_one(Mimic(epsilon=self.epsilon), honest))
