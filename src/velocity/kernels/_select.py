"""Row selection helpers shared by the selection-based rules (private)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["mean_of_rows", "smallest", "smallest_per_row", "tie_rtol"]

_INF = float("inf")


def tie_rtol(dtype: torch.dtype) -> float:
    """Relative band within which Gram-derived scores of ``dtype`` data count as tied.

    Distances from the Gram matrix carry rounding of about 1e-16 (float64 data) or 1e-7 to
    1e-6 (float32 GEMM) relative to the rows' squared norms; exact mathematical ties (repeated
    or quantized values) must still go to the lower index, as the definitions say.
    """
    return 1e-13 if dtype == torch.float64 else 1e-6


def smallest_per_row(values: Tensor, k: int, rtol: float = 0.0) -> Tensor:
    """``(r, k)`` indices of the k smallest entries of each row of ``values`` ``(r, n)``.

    NaN counts as +inf. Entries within ``rtol × median|finite row entries|`` of the row's k-th
    smallest value count as tied with it and are taken in index order; everything clearly
    below is always taken. With ``rtol = 0`` this is a stable sort.
    """
    clean = torch.nan_to_num(values, nan=_INF, posinf=_INF)
    if rtol == 0.0:
        return torch.sort(clean, dim=1, stable=True).indices[:, :k]
    kth = torch.sort(clean, dim=1).values[:, k - 1 : k]
    finite = torch.where(torch.isfinite(clean), clean.abs(), torch.full_like(clean, torch.nan))
    scale = torch.nan_to_num(finite.nanmedian(dim=1, keepdim=True).values, nan=0.0)
    band = rtol * scale
    key = torch.where(clean < kth - band, 0, torch.where(clean <= kth + band, 1, 2))
    key = torch.where(torch.isinf(kth) & torch.isinf(clean), torch.ones_like(key), key)
    return torch.sort(key, dim=1, stable=True).indices[:, :k]


def smallest(values: Tensor, k: int, rtol: float = 0.0) -> Tensor:
    """Indices of the ``k`` smallest of a 1-D ``values``; ties (see :func:`smallest_per_row`)
    to the lower index."""
    return smallest_per_row(values[None, :], k, rtol)[0]


def mean_of_rows(x: Tensor, idx: Tensor) -> Tensor:
    """Unweighted mean of the rows ``idx`` of the finite rows ``x``, without copying them.

    One matrix-vector product with a selection vector (the rules drop non-finite rows first,
    so no ``0 · inf`` can poison it).
    """
    idx = idx.to(x.device)
    coef = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    coef[idx] = 1.0 / idx.numel()
    return coef @ x
