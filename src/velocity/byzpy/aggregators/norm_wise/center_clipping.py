"""ByzPy's ``CenteredClipping`` on :func:`velocity.kernels.centered_clipping`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from torch import Tensor

from velocity._validation import Integer, OneOf, Real, check_value
from velocity.byzpy._tensors import stack
from velocity.byzpy.aggregators.base import Aggregator
from velocity.kernels import centered_clipping, median

__all__ = ["CenteredClipping"]


class CenteredClipping(Aggregator):
    """Centered clipping (Karimireddy, He & Jaggi 2021): ``M`` iterations of
    ``v ← v + (1/n) Σ (x_i − v) · min(1, c_tau / ‖x_i − v‖)``.

    Parameters
    ----------
    c_tau : float
        Clipping radius, ``>= 0``.
    M : int, default 10
        Iterations, ``>= 1``.
    eps : float, default 1e-12
        Distances are floored at ``eps`` (``> 0``).
    init : {"mean", "median", "zero"}, default "mean"
        The starting centre ``v``.
    chunk_size : int, default 32
        A scheduling hint kept for ByzPy compatibility (positive int).

    Examples
    --------
    >>> import torch
    >>> agg = CenteredClipping(c_tau=1.0, M=50, init="median")
    >>> round(agg.aggregate([torch.tensor([v]) for v in (0.0, 1.0, 2.0, 1000.0)]).item(), 3)
    1.5

    Notes
    -----
    Runs :func:`velocity.kernels.centered_clipping`. ``init="median"`` starts, as ByzPy does,
    from the coordinate-wise median that takes the lower middle value for an even n
    (:func:`velocity.kernels.median` with ``even="lower"``, handed to the kernel as its start
    vector). Vectors holding NaN or ±inf are dropped (``docs/kernels.md``).
    """

    name: str = "centered-clipping"

    def __init__(
        self,
        *,
        c_tau: float,
        M: int = 10,
        eps: float = 1e-12,
        init: str = "mean",
        chunk_size: int = 32,
    ) -> None:
        owner = "CenteredClipping"
        self.c_tau: float = check_value(owner, "c_tau", c_tau, Real(low=0.0))
        self.M: int = check_value(owner, "M", M, Integer(low=1))
        self.eps: float = check_value(owner, "eps", eps, Real(low=0.0, low_open=True))
        self.init: str = check_value(owner, "init", init, OneOf("mean", "median", "zero"))
        self.chunk_size: int = check_value(owner, "chunk_size", chunk_size, Integer(low=1))

    def aggregate(self, gradients: Sequence[Any]) -> Any:
        x, layout = stack(gradients, "gradients", "CenteredClipping")
        start: Tensor | Literal["mean", "zero"] = "mean" if self.init == "mean" else "zero"
        if self.init == "median":
            start = median(x, even="lower")
        out = centered_clipping(x, c_tau=self.c_tau, M=self.M, eps=self.eps, init=start)
        return layout.restore(out)
