"""Nearest-neighbour mixing (pre-aggregator)."""

from __future__ import annotations

import torch
from torch import Tensor

from velocity.kernels._checks import check_f, check_updates, check_weights, require, to_work_dtype
from velocity.kernels._gram import finite_rows, pairwise_sq_distances_from
from velocity.kernels._select import smallest_per_row, tie_rtol

__all__ = ["nnm", "nnm_neighbours"]


def nnm_neighbours(dist: Tensor, f: int, rtol: float = 0.0) -> Tensor:
    """``(n, n − f)`` indices: for each row, its n − f nearest rows (itself at distance 0)."""
    return smallest_per_row(dist, dist.shape[0] - f, rtol)


def nnm(updates: Tensor, weights: Tensor | None = None, *, f: int) -> tuple[Tensor, Tensor | None]:
    r"""Nearest-neighbour mixing (Allouah et al. 2023, "Fixing by Mixing: A Recipe for Optimal
    Byzantine ML under Heterogeneity").

    Every row is replaced by the mean of its ``n − f`` nearest rows (Euclidean), itself
    included; ties go to the lower index. One Gram matrix for the distances and one
    ``(n, n) @ (n, d)`` product for the mixing. Needs ``n > f``. Returns ``(mixed, weights)``.

    Examples
    --------
    >>> import torch
    >>> out, _ = nnm(torch.tensor([[0.0], [1.0], [2.0], [100.0]]), f=1)
    >>> out.flatten().tolist()
    [1.0, 1.0, 1.0, 34.333335876464844]
    """
    x = check_updates(updates, "nnm")
    n = x.shape[0]
    check_weights(weights, n, "nnm")
    f = check_f(f, "nnm")
    require(n > f, f"nnm needs n > f; got n={n}, f={f}")
    work = to_work_dtype(x)
    finite = finite_rows(work)
    dist = pairwise_sq_distances_from(work, finite)
    neigh = nnm_neighbours(dist, f, tie_rtol(work.dtype)).to(x.device)
    k = n - f
    mix = torch.zeros(n, n, dtype=work.dtype, device=x.device)
    mix.scatter_(1, neigh, 1.0 / k)
    if bool(finite.all()):
        out = mix @ work
    else:
        # 0 · inf would poison every row: mix each row from its own neighbours only.
        out = torch.empty_like(work)
        for i in range(n):
            out[i] = work.index_select(0, neigh[i]).mean(dim=0)
    return out.to(x.dtype), weights
