"""Nearest-neighbour mixing (pre-aggregator)."""

from __future__ import annotations

import torch
from torch import Tensor

from velocity.kernels._checks import (
    check_f,
    check_updates,
    check_weights,
    drop_nonfinite,
    require,
    to_work_dtype,
)
from velocity.kernels._gram import pairwise_sq_distances_from
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
    The k non-finite rows (any NaN or ±inf entry) are dropped with their weights and count
    against f: the output is NNM of the n − k finite rows with f − k (n − k rows, each the
    mean of the same n − f nearest rows); k > f raises ``ValidationError`` (the policy in
    ``docs/kernels.md``).

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
    kept = drop_nonfinite(to_work_dtype(x), "nnm", f)
    work = kept.x
    assert kept.f is not None
    rows = work.shape[0]
    dist = pairwise_sq_distances_from(work)
    neigh = nnm_neighbours(dist, kept.f, tie_rtol(work.dtype)).to(x.device)
    mix = torch.zeros(rows, rows, dtype=work.dtype, device=x.device)
    mix.scatter_(1, neigh, 1.0 / (n - f))
    return (mix @ work).to(x.dtype), kept.take(weights)
