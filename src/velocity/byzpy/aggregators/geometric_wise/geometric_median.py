"""ByzPy's ``GeometricMedian`` on :func:`velocity.kernels.geometric_median`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from velocity._validation import Integer, OneOf, Real, check_value
from velocity.byzpy._tensors import stack
from velocity.byzpy.aggregators.base import Aggregator
from velocity.kernels import geometric_median

__all__ = ["GeometricMedian"]


class GeometricMedian(Aggregator):
    """Geometric median by Weiszfeld's algorithm: the point minimising ``Σ ‖z − x_i‖``.

    Parameters
    ----------
    tol : float, default 1e-6
        Stop once a step moves less than this (``> 0``).
    max_iter : int, default 256
        At most this many Weiszfeld steps (``>= 1``).
    eps : float, default 1e-12
        Distances are floored at ``eps`` (``> 0``), so a vector at the iterate does not divide
        by zero.
    init : {"median", "mean"}, default "median"
        The starting point: the coordinate-wise median or the mean.
    chunk_size : int, default 32
        A scheduling hint kept for ByzPy compatibility (positive int).

    Examples
    --------
    >>> import torch
    >>> pts = [torch.tensor(p) for p in ([0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [100.0, 100.0])]
    >>> [round(v, 3) for v in GeometricMedian().aggregate(pts).tolist()]
    [1.0, 1.0]

    Notes
    -----
    Runs :func:`velocity.kernels.geometric_median`. Two details differ from ByzPy and only
    move the stopping point within the tolerance: the kernel stops when a step is at most
    ``tol · max(‖z‖, 1)`` (ByzPy: ``tol``), and its ``"median"`` start averages the two
    middle values for an even n (ByzPy takes the lower one). Vectors holding NaN or ±inf are
    dropped (``docs/kernels.md``).
    """

    name: str = "geometric-median"

    def __init__(
        self,
        *,
        tol: float = 1e-6,
        max_iter: int = 256,
        eps: float = 1e-12,
        init: str = "median",
        chunk_size: int = 32,
    ) -> None:
        owner = "GeometricMedian"
        positive = Real(low=0.0, low_open=True)
        self.tol: float = check_value(owner, "tol", tol, positive)
        self.max_iter: int = check_value(owner, "max_iter", max_iter, Integer(low=1))
        self.eps: float = check_value(owner, "eps", eps, positive)
        self.init: str = check_value(owner, "init", init, OneOf("median", "mean"))
        self.chunk_size: int = check_value(owner, "chunk_size", chunk_size, Integer(low=1))

    def aggregate(self, gradients: Sequence[Any]) -> Any:
        x, layout = stack(gradients, "gradients", "GeometricMedian")
        init: Literal["median", "mean"] = "median" if self.init == "median" else "mean"
        out = geometric_median(x, tol=self.tol, max_iter=self.max_iter, eps=self.eps, init=init)
        return layout.restore(out)
