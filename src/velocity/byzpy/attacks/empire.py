"""ByzPy's ``EmpireAttack`` on :class:`velocity.attacks.Empire`."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from velocity._validation import Integer, Real, check_value
from velocity.attacks import Empire
from velocity.byzpy._tensors import stack
from velocity.byzpy.attacks._craft import craft_one
from velocity.byzpy.attacks.base import Attack
from velocity.errors import ValidationError

__all__ = ["EmpireAttack"]


class EmpireAttack(Attack):
    """Inner-product manipulation (Xie, Koyejo & Gupta 2020): ``scale · mean(honest_grads)``.

    Parameters
    ----------
    scale : float, default -1.0
        The factor on the honest mean (negative: against the honest direction).
    chunk_size : int, default 8
        A scheduling hint kept for ByzPy compatibility (positive int).

    Examples
    --------
    >>> import torch
    >>> EmpireAttack(scale=-1.0).apply(honest_grads=[torch.ones(2), 3 * torch.ones(2)]).tolist()
    [-2.0, -2.0]

    Notes
    -----
    Crafted by :class:`velocity.attacks.Empire`, whose rows are float32: the result has the
    inputs' dtype with float32 precision.
    """

    uses_honest_grads: bool = True

    def __init__(self, scale: float = -1.0, *, chunk_size: int = 8) -> None:
        self.scale: float = check_value("EmpireAttack", "scale", scale, Real())
        self.chunk_size: int = check_value("EmpireAttack", "chunk_size", chunk_size, Integer(low=1))

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
            raise ValidationError("EmpireAttack requires honest_grads (a non-empty list)")
        honest, layout = stack(honest_grads, "honest_grads", "EmpireAttack")
        return layout.restore(craft_one(Empire(scale=self.scale), honest))
