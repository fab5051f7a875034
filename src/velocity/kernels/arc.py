"""Adaptive robust clipping (pre-aggregator)."""

from __future__ import annotations

import torch
from torch import Tensor

from velocity.kernels._checks import (
    check_f,
    check_updates,
    check_weights,
    drop_nonfinite,
    require,
)
from velocity.kernels._clipping import clip_factors, clip_rows, row_norms, scaled_copy

__all__ = ["arc"]


def arc(
    updates: Tensor, weights: Tensor | None = None, *, f: int, inplace: bool = False
) -> tuple[Tensor, Tensor | None]:
    r"""Adaptive robust clipping (Allouah et al. 2024, "The Vital Role of Gradient Clipping in
    Byzantine-Resilient Distributed Learning", arXiv:2405.14432).

    The :math:`k = \lfloor 2f(n - f)/n \rfloor` rows of largest norm are clipped to the norm
    of the largest remaining row (ties: the higher index counts as larger). ``k`` is computed
    in exact integer arithmetic. Returns ``(clipped, weights)``; ``inplace`` as in
    :func:`velocity.kernels.clip`. Needs ``f <= n``. The k non-finite rows (any NaN or ±inf
    entry) are dropped with their weights and count against f: the output is ARC of the
    n − k finite rows with f − k (a new tensor); k > f raises ``ValidationError`` (the policy
    in ``docs/kernels.md``). The row norms double as the finite check.

    Examples
    --------
    >>> import torch
    >>> out, _ = arc(torch.tensor([[1.0], [2.0], [3.0], [40.0]]), f=1)
    >>> out.flatten().tolist()
    [1.0, 2.0, 3.0, 3.0]
    """
    x = check_updates(updates, "arc")
    n = x.shape[0]
    check_weights(weights, n, "arc")
    f = check_f(f, "arc")
    require(f <= n, f"arc needs f <= n; got n={n}, f={f}")
    norms = row_norms(x)
    kept = drop_nonfinite(x, "arc", f, hint=norms)
    copy = kept.keep is None and not inplace  # scaled while copied: one read, one write
    if kept.keep is None:
        out = x
    else:  # a new tensor of the finite rows; their norms again, as arc(finite rows) has them
        out, weights = kept.x, kept.take(weights)
        norms = row_norms(out)
        n = out.shape[0]
    assert kept.f is not None
    f = kept.f
    k = (2 * f * (n - f)) // n
    if k == 0:
        return (out.clone() if copy else out), weights
    norms = norms.to(torch.float64)
    order = torch.sort(norms, stable=True).indices
    largest = order[n - k :]
    thr = 0.0 if k == n else float(norms[order[n - k - 1]])
    if copy:
        factors = torch.ones(n, dtype=torch.float64, device=norms.device)
        factors[largest] = clip_factors(norms[largest], thr)
        return scaled_copy(out, factors), weights
    clip_rows(out, largest, torch.full((k,), thr, dtype=torch.float64), norms[largest])
    return out, weights
