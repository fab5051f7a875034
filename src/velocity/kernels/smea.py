"""Smallest maximum eigenvalue averaging (exact)."""

from __future__ import annotations

import torch
from torch import Tensor

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
from velocity.kernels._gram import gram
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
    |S|, an (n − f)×(n − f) problem). Refuses when C(n, f) > ``max_subsets``. Needs
    ``n > 2f``. ``weights`` are validated and ignored. The k non-finite rows (any NaN or ±inf
    entry) are dropped and count against f: the result is SMEA of the n − k finite rows with
    f − k; k > f raises ``ValidationError`` (the policy in ``docs/kernels.md``).

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
    kept = drop_nonfinite(to_work_dtype(x), "smea", f)
    assert kept.f is not None
    work, f = kept.x, kept.f
    n = work.shape[0]
    g = gram(work)
    m = n - f

    def top_eigenvalue(idx: Tensor) -> Tensor:
        sub = g[idx[:, :, None], idx[:, None, :]]
        row = sub.mean(dim=2, keepdim=True)  # centring: H G H with H = I - 11ᵀ/m
        cov = sub - row - row.transpose(1, 2) + row.mean(dim=1, keepdim=True)
        lam: Tensor = torch.linalg.eigvalsh(cov)[:, -1] / m
        return lam

    chosen = best_subset(
        n, f, top_eigenvalue, rule="smea", max_subsets=max_subsets, device=x.device
    )
    note_selected(kept.rows_of(chosen), x.shape[0])
    return mean_of_rows(work, chosen).to(x.dtype)
