"""Nearest-neighbour mixing (pre-aggregator)."""

from __future__ import annotations

import torch
from torch import Tensor

from velocity.kernels._checks import (
    check_f,
    check_updates,
    check_weights,
    require,
    to_work_dtype,
)
from velocity.kernels._gram import SqDistanceBounds, distance_bounds
from velocity.kernels._select import smallest_per_row, tie_rtol, undetermined_per_row

__all__ = ["nnm", "nnm_neighbours"]

_SHARED_SETS_MIN_ROWS = 40


def nnm_neighbours(dist: Tensor, f: int, rtol: float = 0.0) -> Tensor:
    """``(n, n − f)`` indices: for each row, its n − f nearest rows (itself at distance 0)."""
    return smallest_per_row(dist, dist.shape[0] - f, rtol)


def nearest_from_bounds(bounds: SqDistanceBounds, f: int, rtol: float) -> Tensor:
    """:func:`nnm_neighbours` of the exact distances, from distance bounds refined only where
    a row's choice depends on them (the pairs of each undetermined row with the rows it may
    choose or not); when that is most of the matrix or still leaves a choice open, from the
    accurate engine."""
    rows = bounds.value.shape[0]
    k = rows - f
    for attempt in range(2):
        if bounds.exact:
            break
        todo = undetermined_per_row(bounds.lo(), bounds.hi(), k, rtol)
        which = torch.nonzero(todo.any(dim=1)).flatten()
        if which.numel() == 0:
            break
        partners = torch.nonzero(todo.any(dim=0)).flatten()
        if attempt == 0 and 4 * which.numel() * (which.numel() + partners.numel()) <= rows * rows:
            bounds.refine(which, partners)
        else:
            bounds.make_exact()
    return nnm_neighbours(bounds.value, f, rtol)


def _mix(work: Tensor, neigh: Tensor, count: int) -> Tensor:
    """Row i of the result: the mean of the rows ``neigh[i]``.

    One ``(rows, rows) @ (rows, d)`` product, which writes the result. With 40 rows or more
    that product costs more flops than its output costs to write, and rows with the same
    neighbour set (all honest rows, typically) then share one row of a ``(sets, rows) @
    (rows, d)`` product, copied out, when that halves the product at least.
    """
    rows = work.shape[0]
    member = torch.zeros(rows, rows, dtype=torch.bool, device=work.device)
    member.scatter_(1, neigh, True)
    if rows >= _SHARED_SETS_MIN_ROWS:
        sets, inverse = torch.unique(member.to(torch.uint8), dim=0, return_inverse=True)
        if 2 * sets.shape[0] <= rows:
            shared: Tensor = (sets.to(work.dtype) * (1.0 / count)) @ work
            return shared[inverse]  # (advanced indexing copies faster than index_select)
    out: Tensor = (member.to(work.dtype) * (1.0 / count)) @ work
    return out


def nnm(updates: Tensor, weights: Tensor | None = None, *, f: int) -> tuple[Tensor, Tensor | None]:
    r"""Nearest-neighbour mixing (Allouah et al. 2023, "Fixing by Mixing: A Recipe for Optimal
    Byzantine ML under Heterogeneity").

    Every row is replaced by the mean of its ``n − f`` nearest rows (Euclidean), itself
    included; ties go to the lower index. One Gram matrix for the distances (refined only
    where a choice of neighbours depends on it) and one product for the mixing, with one row
    per distinct neighbour set. Needs ``n > f``. Returns ``(mixed, weights)``.
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
    kept, bounds = distance_bounds(to_work_dtype(x), "nnm", f)
    work = kept.x
    assert kept.f is not None
    neigh = nearest_from_bounds(bounds, kept.f, tie_rtol(work.dtype)).to(x.device)
    return _mix(work, neigh, n - f).to(x.dtype), kept.take(weights)
