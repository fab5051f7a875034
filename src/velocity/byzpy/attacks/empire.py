"""ByzPy's ``EmpireAttack`` on :class:`velocity.attacks.Empire`."""

from __future__ import annotations

from torch import Tensor

from velocity._validation import Integer, Real, check_value
from velocity.attacks import Empire
from velocity.byzpy.attacks._craft import FromHonestGrads, craft_one

__all__ = ["EmpireAttack"]


class EmpireAttack(FromHonestGrads):
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

    def __init__(self, scale: float = -1.0, *, chunk_size: int = 8) -> None:
        self.scale: float = check_value("EmpireAttack", "scale", scale, Real())
        self.chunk_size: int = check_value("EmpireAttack", "chunk_size", chunk_size, Integer(low=1))

    def _craft(self, honest: Tensor) -> Tensor:
        return craft_one(Empire(scale=self.scale), honest)
