"""ByzPy's ``SignFlipAttack`` on :class:`velocity.attacks.SignFlip`."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from velocity._validation import Integer, Real, check_value
from velocity.attacks import SignFlip
from velocity.byzpy._tensors import stack
from velocity.byzpy.attacks._craft import craft_one
from velocity.byzpy.attacks.base import Attack
from velocity.errors import ValidationError

__all__ = ["SignFlipAttack"]


class SignFlipAttack(Attack):
    """Sign flipping: ``scale · base_grad`` (``scale=-1``: the node's own gradient reversed).

    Parameters
    ----------
    scale : float, default -1.0
        The factor on the node's own gradient.
    chunk_size : int, default 8192
        A scheduling hint kept for ByzPy compatibility (positive int).

    Examples
    --------
    >>> import torch
    >>> SignFlipAttack().apply(base_grad=torch.tensor([1.0, -2.0])).tolist()
    [-1.0, 2.0]

    Notes
    -----
    Crafted by :class:`velocity.attacks.SignFlip` (float32 rows: the result has the input's
    dtype with float32 precision).
    """

    uses_base_grad: bool = True

    def __init__(self, scale: float = -1.0, *, chunk_size: int = 8192) -> None:
        self.scale: float = check_value("SignFlipAttack", "scale", scale, Real())
        self.chunk_size: int = check_value(
            "SignFlipAttack", "chunk_size", chunk_size, Integer(low=1)
        )

    def apply(
        self,
        *,
        model: nn.Module | None = None,
        x: Tensor | None = None,
        y: Tensor | None = None,
        honest_grads: list[Any] | None = None,
        base_grad: Any | None = None,
    ) -> Any:
        if base_grad is None:
            raise ValidationError("SignFlipAttack requires base_grad")
        own, layout = stack([base_grad], "base_grad", "SignFlipAttack")
        honest = own.new_empty((0, own.shape[1]))
        return layout.restore(craft_one(SignFlip(scale=self.scale), honest, own))
