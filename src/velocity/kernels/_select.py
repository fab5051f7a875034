"""Row selection helpers shared by the selection-based rules (private)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["mean_of_rows", "smallest"]


def smallest(values: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` smallest values, ties broken by lower index; NaN counts as +inf."""
    clean = torch.nan_to_num(values, nan=float("inf"))
    return torch.sort(clean, stable=True).indices[:k]


def mean_of_rows(x: Tensor, idx: Tensor, all_finite: bool) -> Tensor:
    """Unweighted mean of the rows ``idx`` of ``x`` without copying them when possible.

    With only finite rows the mean is one matrix-vector product with a selection vector; when
    some row is non-finite, ``0 · inf`` would poison it, so the selected rows are gathered.
    """
    idx = idx.to(x.device)
    if all_finite:
        coef = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        coef[idx] = 1.0 / idx.numel()
        return coef @ x
    return x.index_select(0, idx).mean(dim=0)
