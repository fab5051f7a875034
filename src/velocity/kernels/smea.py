"""Smallest maximum eigenvalue averaging (exact)."""

from __future__ import annotations

import torch
from torch import Tensor

from velocity.kernels._checks import (
    check_f,
    check_int,
    check_updates,
    check_weights,
    require,
    to_work_dtype,
)
from velocity.kernels._gram import finite_rows, gram
from velocity.kernels._select import mean_of_rows
from velocity.kernels._subsets import best_subset

__all__ = ["smea"]


def smea(
    updates: Tensor, weights: Tensor | None = None, *, f: int, max_subsets: int = 1_000_000
) -> Tensor:
    r"""Smallest maximum eigenvalue averaging (Allouah, Guerraoui, Gupta, Pinot & Stephan
    2023, "On the Privacy-Robustness-Utility Trilemma in Distributed Learning", ICML).

    The mean of the subset :math:`S`, :math:`|S| = n - f`, whose empirical covariance
    :math:`\frac{1}{|S|}\sum_{i\in S}(x_i - \bar x_S)(x_i - \bar x_S)^\top` has the smallest
    largest eigenvalue, by exact search over all C(n, f) subsets with exact eigenvalues (the
    nonzero spectrum of the covariance is that of the subset's centred Gram matrix divided by
    |S|, an (n − f)×(n − f) problem). Subsets holding a non-finite row score +inf. Refuses
    when C(n, f) > ``max_subsets``. Needs ``n > 2f``. ``weights`` are validated and ignored.

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [30.0, 30.0]])
    >>> [round(v, 4) for v in smea(x, f=1).tolist()]
    [0.3333, 0.3333]
    """
    x = check_updates(updates, "smea")
    n = x.shape[0]
    check_weights(weights, n, "smea")
    f = check_f(f, "smea")
    max_subsets = check_int(max_subsets, "max_subsets", "smea", minimum=1)
    require(n > 2 * f, f"smea needs n > 2f; got n={n}, f={f}")
    work = to_work_dtype(x)
    finite = finite_rows(work)
    all_finite = bool(finite.all())
    g = torch.full((n, n), float("inf"), dtype=torch.float64, device=x.device)
    idx_f = torch.nonzero(finite).flatten().to(x.device)
    if idx_f.numel():
        g[idx_f[:, None], idx_f[None, :]] = gram(work if all_finite else work[finite])
    m = n - f

    def top_eigenvalue(idx: Tensor) -> Tensor:
        sub = g[idx[:, :, None], idx[:, None, :]]
        bad = None
        if not all_finite:
            bad = ~torch.isfinite(sub).all(dim=(1, 2))
            sub = torch.where(bad[:, None, None], torch.zeros_like(sub), sub)
        row = sub.mean(dim=2, keepdim=True)  # centring: H G H with H = I - 11ᵀ/m
        cov = sub - row - row.transpose(1, 2) + row.mean(dim=1, keepdim=True)
        lam = torch.linalg.eigvalsh(cov)[:, -1] / m
        return lam if bad is None else torch.where(bad, torch.full_like(lam, float("inf")), lam)

    chosen = best_subset(
        n, f, top_eigenvalue, rule="smea", max_subsets=max_subsets, device=x.device
    )
    return mean_of_rows(work, chosen, all_finite).to(x.dtype)
