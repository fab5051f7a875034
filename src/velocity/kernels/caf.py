"""CAF: covariance-bound agnostic filter."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from velocity.errors import ValidationError
from velocity.kernels._checks import (
    check_f,
    check_int,
    check_updates,
    check_weights,
    drop_nonfinite,
    note_selected,
    require,
    to_work_dtype,
)
from velocity.kernels._gram import Basis

__all__ = ["caf"]


def caf(
    updates: Tensor,
    weights: Tensor | None = None,
    *,
    f: int,
    power_iters: int | None = None,
    power_start: Tensor | None = None,
) -> Tensor:
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

    ``power_iters=k`` replaces the exact eigenpair by ByzPy's approximation: ``k`` steps of
    power iteration on the weighted covariance from ``power_start`` (a ``(d,)`` tensor; the
    all-ones direction when ``None``), a step stopping early when the iterate's norm falls to
    1e-12; :math:`\lambda` is then the weighted variance along the final direction, the loop
    ends once :math:`\max \tau \le 10^{-12}`, and (as in ByzPy) :math:`\max \tau` runs over
    all rows, weighted or not. Still only n×n work per step.

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
    if power_iters is not None:
        power_iters = check_int(power_iters, "power_iters", "caf", minimum=1)
    d = x.shape[1]
    if power_start is not None and (
        not isinstance(power_start, Tensor)
        or power_start.shape != (d,)
        or not power_start.is_floating_point()
        or not bool(torch.isfinite(power_start).all())
    ):
        raise ValidationError(
            f"caf: power_start must be None or a finite floating tensor of shape ({d},); "
            f"got {power_start!r:.80}"
        )
    work = to_work_dtype(x)
    # The Gram matrix's diagonal is the finite check's hint (a non-finite row makes it
    # non-finite), so finite input is read twice in all: the Gram matrix, then the result.
    basis = Basis(work)
    kept = drop_nonfinite(work, "caf", f, hint=basis.k.diagonal())
    assert kept.f is not None
    if kept.keep is not None:  # the finite rows' own Gram matrix, bit for bit
        basis = Basis(kept.x)
    if power_iters is not None:
        return _caf_power(basis, kept.f, power_iters, power_start, kept.rows_of, n, x.dtype)
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


def _caf_power(
    basis: Basis,
    f: int,
    iters: int,
    start: Tensor | None,
    rows_of: Callable[[Tensor], Tensor],
    n: int,
    dtype: torch.dtype,
) -> Tensor:
    """CAF with the top eigenvector approximated by power iteration (``caf(power_iters=...)``).

    Every direction after the first lies in the span of the centred rows, so it is kept as
    coefficients ``β`` over the rows (``Σβ = 0``) and all products come from the Gram matrix;
    the starting direction enters through the one product ``X u₀``.
    """
    work = basis.x
    g = basis.k
    m = basis.n_rows
    u0 = torch.ones(work.shape[1], dtype=torch.float64) if start is None else start.double()
    norm0 = float(torch.linalg.vector_norm(u0))
    if norm0 == 0.0:
        u0 = torch.ones_like(u0)
        norm0 = float(torch.linalg.vector_norm(u0))
    u0 = (u0 / norm0).to(device=work.device, dtype=work.dtype)
    s0 = (work @ u0).to(torch.float64)  # x_i · u₀
    c = torch.ones(m, dtype=torch.float64, device=g.device)
    total = float(m)
    best_val = float("inf")
    best_p = c / m
    while total > m - 2 * f:
        p = c / total
        proj = s0 - p @ s0  # (x_i - μ) · u₀
        for _ in range(iters):
            a = c * proj
            beta = a - a.sum() * p  # Σ a_i (x_i - μ) as coefficients over the rows
            gb = g @ beta
            size = float((beta @ gb).clamp_min(0.0).sqrt())
            if size <= 1e-12:
                break
            proj = (gb - p @ gb) / size
        lam = float((c * proj * proj).sum()) / max(1e-12, float(c.sum()))
        if lam < best_val:
            best_val, best_p = lam, p
        tau = proj * proj
        tau_max = float(tau.max())
        if tau_max <= 1e-12:
            break
        c = (c * (1.0 - tau / tau_max)).clamp_min(0.0)
        total = float(c.sum())
        if total <= 0.0:
            break
    note_selected(rows_of(torch.nonzero(best_p > 0).flatten()), n)
    return basis.materialize(best_p).to(dtype)
