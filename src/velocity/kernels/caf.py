"""CAF: covariance-bound agnostic filter."""

from __future__ import annotations

import torch
from torch import Tensor

from velocity.kernels._checks import (
    check_f,
    check_updates,
    check_weights,
    drop_nonfinite,
    note_selected,
    require,
    to_work_dtype,
)
from velocity.kernels._gram import Basis

__all__ = ["caf"]


def caf(updates: Tensor, weights: Tensor | None = None, *, f: int) -> Tensor:
    r"""Covariance-bound agnostic filter (Allouah, Guerraoui & Stephan 2025, "Towards
    Trustworthy Federated Learning with Untrusted Participants", ICML).

    Start with weights :math:`c_i = 1` and repeat while :math:`\sum_i c_i > n - 2f`:

    1. :math:`\mu_c = \sum_i c_i x_i / \sum_i c_i`;
    2. :math:`(\lambda, v)`: the top eigenpair of the weighted covariance
       :math:`\sum_i c_i (x_i - \mu_c)(x_i - \mu_c)^\top / \sum_i c_i` (exact);
    3. remember :math:`\mu_c` if :math:`\lambda` is the smallest seen so far;
    4. :math:`\tau_i = ((x_i - \mu_c)\cdot v)^2`, :math:`c_i \leftarrow c_i(1 - \tau_i/\max_j
       \tau_j)`, the max over rows still weighted.

    Returns the remembered :math:`\mu_c`. Each step zeroes at least one weight, so there are at
    most n steps; all of them run on the n×n Gram matrix. Needs ``n > 2f``. ``weights`` are
    validated and ignored. The k non-finite rows (any NaN or ±inf entry) are dropped and
    count against f: the result is CAF of the n' = n − k finite rows with f' = f − k (the
    loop runs while :math:`\sum_i c_i > n' - 2f'`); k > f raises ``ValidationError`` (the
    policy in ``docs/kernels.md``).

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [60.0, -60.0]])
    >>> [round(v, 2) for v in caf(x, f=1).tolist()]
    [0.5, 0.5]
    """
    x = check_updates(updates, "caf")
    n = x.shape[0]
    check_weights(weights, n, "caf")
    f = check_f(f, "caf")
    require(n > 2 * f, f"caf needs n > 2f; got n={n}, f={f}")
    kept = drop_nonfinite(to_work_dtype(x), "caf", f)
    assert kept.f is not None
    basis = Basis(kept.x)
    g = basis.k
    m = basis.n_rows
    c = torch.ones(m, dtype=torch.float64, device=g.device)
    best_val = float("inf")
    best_p = c / m
    while float(c.sum()) > m - 2 * kept.f:
        total = c.sum()
        p = c / total
        gp = g @ p
        centred = g - gp[:, None] - gp[None, :] + p @ gp  # (x_i - mu)·(x_j - mu)
        root = c.sqrt()
        lam_all, vecs = torch.linalg.eigh(root[:, None] * centred * root[None, :] / total)
        lam = float(lam_all[-1])
        if lam < best_val:
            best_val, best_p = lam, p
        if lam <= 0.0:
            break  # the weighted points coincide: nothing left to filter
        u = vecs[:, -1]
        proj = centred @ (root * u) / (lam * total).sqrt()
        tau = torch.where(c > 0, proj * proj, torch.zeros_like(proj))
        tau_max = tau.max()
        if float(tau_max) <= 0.0:
            break
        c = c * (1.0 - tau / tau_max)
    alpha = best_p
    note_selected(kept.rows_of(torch.nonzero(alpha > 0).flatten()), n)
    return basis.materialize(alpha).to(x.dtype)
