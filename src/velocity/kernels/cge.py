"""Comparative gradient elimination."""

from __future__ import annotations

import torch
from torch import Tensor

from velocity.kernels._checks import check_f, check_updates, check_weights, require, to_work_dtype
from velocity.kernels._gram import finite_rows
from velocity.kernels._select import mean_of_rows, smallest

__all__ = ["cge"]


def cge(updates: Tensor, weights: Tensor | None = None, *, f: int) -> Tensor:
    r"""Comparative gradient elimination (Gupta & Vaidya 2020, "Fault-Tolerance in Distributed
    Optimization: The Case of Redundancy"; Gupta, Liu & Vaidya 2021).

    The mean of the ``n − f`` rows with the smallest L2 norms (ties: lower index; a non-finite
    norm counts as +inf). Needs ``n > f``. ``weights`` are validated and ignored.

    Examples
    --------
    >>> import torch
    >>> round(cge(torch.tensor([[1.0], [-2.0], [3.0], [-50.0]]), f=1).item(), 4)
    0.6667
    """
    x = check_updates(updates, "cge")
    n = x.shape[0]
    check_weights(weights, n, "cge")
    f = check_f(f, "cge")
    require(n > f, f"cge needs n > f; got n={n}, f={f}")
    work = to_work_dtype(x)
    norms = torch.linalg.vector_norm(work, dim=1).to(torch.float64)
    chosen = smallest(norms, n - f)
    return mean_of_rows(work, chosen, bool(finite_rows(work).all())).to(x.dtype)
