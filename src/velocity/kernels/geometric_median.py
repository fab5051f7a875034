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
from velocity.kernels._gram import Basis
from velocity.kernels.median import sorted_median

__all__ = ["geometric_median", "initial_alpha", "median_centred_basis"]

INITS = ("mean", "median", "zero")


def median_centred_basis(work: Tensor, start: str | Tensor) -> Basis:
    """A :class:`Basis` over the (finite) rows of ``work`` plus ``[origin, start point]``,
    centred at their coordinate-wise median.

    ``start`` is ``"mean"``, ``"zero"``, ``"median"`` or a ``(d,)`` tensor; the origin is
    always an extra point (it represents ``"zero"`` and measures ``‖z‖``). The median centre
    keeps distances among the honest rows accurate when a few rows are very far away.
    """
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
    non-finite raises ``ValidationError`` (the policy in ``docs/kernels.md``). All iterations
    run on the rows' Gram matrix (see :mod:`velocity.kernels._gram`); the data are read twice
    in all.

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
    kept = drop_nonfinite(to_work_dtype(x), rule)
    w = kept.take(w)
    basis = median_centred_basis(kept.x, init)
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
