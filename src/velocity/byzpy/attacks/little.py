"""ByzPy's ``LittleAttack`` on :class:`velocity.attacks.Little`."""

from __future__ import annotations

import math
from statistics import NormalDist

from torch import Tensor

from velocity._validation import Integer, NoneOr, check_value
from velocity.attacks import Little
from velocity.byzpy.attacks._craft import FromHonestGrads, craft_one
from velocity.errors import ValidationError

__all__ = ["LittleAttack"]

_P_CLAMP = 1e-12


class LittleAttack(FromHonestGrads):
    r"""A Little Is Enough (Baruch, Baruch & Goldberg 2019): :math:`\mu + z_{\max}\,\sigma`.

    ``μ`` and ``σ`` are the coordinate-wise mean and (population) standard deviation of the
    honest gradients, ``s = max(1, ⌊N/2⌋ + 1 − f)`` and :math:`z_{\max} = \Phi^{-1}((N-s)/N)`.

    Parameters
    ----------
    f : int
        The number of Byzantine nodes, ``>= 0``.
    N : int, optional
        All nodes (``>= 1``); ``len(honest_grads) + f`` when ``None``. A call needs ``N >= f``.
    chunk_size : int, default 8192
        A scheduling hint kept for ByzPy compatibility (positive int).

    Examples
    --------
    >>> import torch
    >>> grads = [torch.tensor([0.0]), torch.tensor([2.0])]
    >>> round(LittleAttack(f=10, N=50).apply(honest_grads=grads).item(), 4)
    1.4677

    Notes
    -----
    Crafted by :class:`velocity.attacks.Little` with its factor ``z`` fixed here: ByzPy's
    ``z_max`` (with ByzPy's ``s >= 1`` and ``(N − s)/N`` clamped to ``[1e-12, 1 − 1e-12]``,
    from the exact normal quantile where ByzPy uses a 1e-9-accurate approximation) times
    ``sqrt((h − 1)/h)``, which turns the kernel's Bessel-corrected σ of the ``h`` honest
    gradients into ByzPy's population σ. Float32 rows, cast to the inputs' dtype.
    """

    def __init__(self, f: int, N: int | None = None, *, chunk_size: int = 8192) -> None:
        self.f: int = check_value("LittleAttack", "f", f, Integer(low=0))
        self.N: int | None = check_value("LittleAttack", "N", N, NoneOr(Integer(low=1)))
        self.chunk_size: int = check_value("LittleAttack", "chunk_size", chunk_size, Integer(low=1))

    def z_max(self, h: int) -> float:
        """ByzPy's factor for ``h`` honest gradients."""
        total = h + self.f if self.N is None else self.N
        if total < self.f:
            raise ValidationError(f"LittleAttack: N must be >= f; got N={total}, f={self.f}")
        s = max(1, total // 2 + 1 - self.f)
        p = min(max((total - s) / total, _P_CLAMP), 1.0 - _P_CLAMP)
        return NormalDist().inv_cdf(p)

    def _craft(self, honest: Tensor) -> Tensor:
        h = honest.shape[0]
        z = self.z_max(h) * (math.sqrt((h - 1) / h) if h > 1 else 0.0)
        return craft_one(Little(z=z), honest)
