"""Geometric median by Weiszfeld's algorithm."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from velocity.errors import ValidationError
from velocity.kernels._checks import (
    check_choice,
    check_int,
    check_nonneg_float,
    check_updates,
    check_weights,
    drop_nonfinite,
    to_work_dtype,
)
from velocity.kernels._coordinate import coordinatewise
from velocity.kernels._gram import Basis, sq_distances_to
from velocity.kernels.median import sorted_median

__all__ = ["geometric_median", "initial_alpha", "median_centred_basis"]

INITS = ("mean", "median", "zero")
DIRECT_MAX_ITER = 8
"""Up to this many iterations, Weiszfeld runs directly on the data (two passes, about 3.5
reads' time per iteration); beyond, on the Gram matrix: a coordinate-wise median, one Gram
matrix and one pass, measured as 5 (n = 100, d = 1e6) to 9 (n = 20, d = 1e5) direct
iterations."""


def median_centred_basis(work: Tensor, start: str | Tensor, med: Tensor | None = None) -> Basis:
    """A :class:`Basis` over the (finite) rows of ``work`` plus ``[origin, start point]``,
    centred at their coordinate-wise median.

    ``start`` is ``"mean"``, ``"zero"``, ``"median"`` or a ``(d,)`` tensor; the origin is
    always an extra point (it represents ``"zero"`` and measures ``‖z‖``). The median centre
    keeps distances among the honest rows accurate when a few rows are very far away.
    ``med``: that median, if the caller has it.
    """
    if med is None:
        med = coordinatewise(work, sorted_median, out_dtype=work.dtype)
    assert med is not None
    extras = [torch.zeros(1, work.shape[1], dtype=work.dtype, device=work.device)]
    if isinstance(start, Tensor):
        extras.append(start.to(work)[None, :])
    elif start == "median":
        extras.append(med[None, :])
    return Basis(work, torch.cat(extras, dim=0), centre=med)


def initial_alpha(basis: Basis, start: str | Tensor) -> Tensor:
    """Coefficients of the starting point over ``[rows; origin; (start point)]``."""
    alpha = torch.zeros(basis.size, dtype=torch.float64, device=basis.k.device)
    if isinstance(start, str) and start == "mean":
        alpha[: basis.n_rows] = 1.0 / basis.n_rows
    elif isinstance(start, str) and start == "zero":
        alpha[basis.n_rows] = 1.0
    else:
        alpha[basis.n_rows + 1] = 1.0
    return alpha


def geometric_median(
    updates: Tensor,
    weights: Tensor | None = None,
    *,
    tol: float = 1e-6,
    max_iter: int = 256,
    eps: float = 1e-12,
    init: Literal["mean", "median", "zero"] = "median",
) -> Tensor:
    r"""Geometric median by Weiszfeld's algorithm (Weiszfeld 1937; smoothed as in Pillutla
    et al. 2022, "Robust Aggregation for Federated Learning").

    Approximates :math:`\arg\min_z \sum_i w_i \|z - x_i\|_2` by iterating

    .. math:: z \leftarrow \frac{\sum_i (w_i/\beta_i)\, x_i}{\sum_i w_i/\beta_i},
              \qquad \beta_i = \max(\|x_i - z\|_2, \varepsilon)

    from ``init`` until :math:`\|z_{t+1} - z_t\| \le \mathrm{tol}\cdot\max(\|z_t\|, 1)` or
    ``max_iter`` steps. ``weights`` (default uniform) weight the rows. Non-finite rows (any NaN
    or ±inf entry) are dropped with their weights; the rule has no f, so only all n rows
    non-finite raises ``ValidationError`` (the policy in ``docs/kernels.md``). With
    ``max_iter <= 8`` every iteration reads the data twice (distances by direct differences,
    then the weighted mean); with more, all iterations run on the rows' Gram matrix (see
    :mod:`velocity.kernels._gram`), centred at their coordinate-wise median, and the data are
    read twice in all besides the median.

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [100.0, 100.0]])
    >>> [round(v, 3) for v in geometric_median(x).tolist()]
    [1.0, 1.0]
    """
    rule = "geometric_median"
    x = check_updates(updates, rule)
    w = check_weights(weights, x.shape[0], rule)
    tol = check_nonneg_float(tol, "tol", rule)
    max_iter = check_int(max_iter, "max_iter", rule, minimum=0)
    eps = check_nonneg_float(eps, "eps", rule, positive=True)
    check_choice(init, "init", rule, INITS)
    work = to_work_dtype(x)
    if max_iter <= DIRECT_MAX_ITER:
        return _weiszfeld_direct(work, w, tol, max_iter, eps, init).to(x.dtype)
    med = coordinatewise(work, sorted_median, out_dtype=work.dtype, finite_only=True)
    kept = drop_nonfinite(work, rule, finite=None if med is None else _all_rows(work))
    w = kept.take(w)
    basis = median_centred_basis(kept.x, init, med if kept.keep is None else None)
    wf = torch.ones(basis.n_rows, dtype=torch.float64, device=basis.k.device)
    if w is not None:
        wf = w.to(basis.k.device)
    if float(wf.sum()) <= 0:
        raise ValidationError(f"{rule}: the weights of the finite rows sum to 0")
    alpha = initial_alpha(basis, init)
    origin = torch.zeros_like(alpha)
    origin[basis.n_rows] = 1.0
    for _ in range(max_iter):
        beta = basis.sq_dist_to(alpha)[: basis.n_rows].sqrt().clamp_min(eps)
        inv = wf / beta
        new = torch.zeros_like(alpha)
        new[: basis.n_rows] = inv / inv.sum()
        step = float(basis.sq_norm(new - alpha).sqrt())
        size = float(basis.sq_norm(alpha - origin).sqrt())
        alpha = new
        if step <= tol * max(size, 1.0):
            break
    return basis.materialize(alpha).to(x.dtype)


def _all_rows(x: Tensor) -> Tensor:
    """The finite-rows mask when a check has already shown every row finite."""
    return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)


def _weiszfeld_direct(
    work: Tensor, w: Tensor | None, tol: float, max_iter: int, eps: float, init: str
) -> Tensor:
    """Weiszfeld on the data itself: each iteration one pass for the distances (direct
    differences, float64 across blocks) and one for the weighted mean.

    The first distances (to the start point) are the finite check's hint; if rows are
    dropped, the start point and its distances are computed again on the finite rows.
    """
    rule = "geometric_median"

    def start(rows: Tensor) -> Tensor:
        if init == "zero":
            return torch.zeros(rows.shape[1], dtype=rows.dtype, device=rows.device)
        if init == "mean":
            coef = torch.full((rows.shape[0],), 1.0 / rows.shape[0], dtype=torch.float64)
            return coef.to(device=rows.device, dtype=rows.dtype) @ rows
        med = coordinatewise(rows, sorted_median, out_dtype=rows.dtype)
        assert med is not None
        return med

    z = start(work)
    sq = sq_distances_to(work, z)
    kept = drop_nonfinite(work, rule, hint=sq)
    if kept.keep is not None:
        work = kept.x
        z = start(work)
        sq = sq_distances_to(work, z)
    w = kept.take(w)
    wf = torch.ones(work.shape[0], dtype=torch.float64, device=work.device)
    if w is not None:
        wf = w.to(work.device)
    if float(wf.sum()) <= 0:
        raise ValidationError(f"{rule}: the weights of the finite rows sum to 0")
    for it in range(max_iter):
        beta = sq.clamp_min(0.0).sqrt().clamp_min(eps)
        inv = wf / beta
        new = (inv / inv.sum()).to(work.dtype) @ work
        step = float(torch.linalg.vector_norm(new.to(torch.float64) - z.to(torch.float64)))
        size = float(torch.linalg.vector_norm(z.to(torch.float64)))
        z = new
        if step <= tol * max(size, 1.0) or it + 1 == max_iter:
            break
        sq = sq_distances_to(work, z)
    return z
