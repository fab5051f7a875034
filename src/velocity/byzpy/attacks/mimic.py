"""ByzPy's ``MimicAttack`` on :class:`velocity.attacks.Mimic`."""

from __future__ import annotations

from torch import Tensor

from velocity._validation import Integer, check_value
from velocity.attacks import Mimic
from velocity.byzpy.attacks._craft import FromHonestGrads, craft_one
from velocity.errors import ValidationError

__all__ = ["MimicAttack"]


class MimicAttack(FromHonestGrads):
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

    def __init__(self, epsilon: int = 0, *, chunk_size: int = 8192) -> None:
        self.epsilon: int = check_value("MimicAttack", "epsilon", epsilon, Integer(low=0))
        self.chunk_size: int = check_value("MimicAttack", "chunk_size", chunk_size, Integer(low=1))

    def _craft(self, honest: Tensor) -> Tensor:
        if self.epsilon >= honest.shape[0]:
            raise ValidationError(
                f"MimicAttack: epsilon must be < the number of honest_grads; "
                f"got epsilon={self.epsilon}, n={honest.shape[0]}"
            )
        return craft_one(Mimic(epsilon=self.epsilon), honest)
