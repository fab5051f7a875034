"""Row selection helpers shared by the selection-based rules (private)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["mean_of_rows", "smallest", "smallest_per_row", "tie_rtol", "undetermined_per_row"]

_INF = float("inf")


def tie_rtol(dtype: torch.dtype) -> float:
    """Relative band within which Gram-derived scores of ``dtype`` data count as tied.

    Distances from the Gram matrix carry rounding of about 1e-16 (float64 data) or 1e-7 to
    1e-6 (float32 GEMM) relative to the rows' squared norms; exact mathematical ties (repeated
    or quantized values) must still go to the lower index, as the definitions say.
    """
    return 1e-13 if dtype == torch.float64 else 1e-6


def _tie_band(clean: Tensor, rtol: float) -> Tensor:
    """``(r, 1)``: ``rtol`` times the median of the finite ``|entries|`` of each row (0 if none)."""
    finite = torch.where(torch.isfinite(clean), clean.abs(), torch.full_like(clean, torch.nan))
    scale = torch.nan_to_num(finite.nanmedian(dim=1, keepdim=True).values, nan=0.0)
    return rtol * scale


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
    band = _tie_band(clean, rtol)
    key = torch.where(clean < kth - band, 0, torch.where(clean <= kth + band, 1, 2))
    key = torch.where(torch.isinf(kth) & torch.isinf(clean), torch.ones_like(key), key)
    return torch.sort(key, dim=1, stable=True).indices[:, :k]


def undetermined_per_row(lo: Tensor, hi: Tensor, k: int, rtol: float = 0.0) -> Tensor:
    """Boolean ``(r, n)``: the entries to compute exactly before ``smallest_per_row(values, k,
    rtol)`` is known, when only bounds ``lo <= values <= hi`` are (entrywise; finite, >= 0:
    distances, Krum scores). All False: any values within the bounds — the estimates
    themselves — select what the exact values select.

    The selection is the k first indices ordered by (key, index), an entry's key being 0
    (below the k-th smallest value by more than the tie band), 1 (within the band) or 2
    (above it). The k-th smallest value lies between the k-th smallest ``lo`` and ``hi``, the
    band between theirs, which bounds the keys each entry can have. A row is determined when
    exactly k entries can have key 0 or 1 (they are the selection) or when every such entry
    has one possible key; otherwise its entries that can be selected and have more than one
    possible key are the ones to compute.
    """
    r, n = lo.shape
    if k <= 0 or k >= n:
        return torch.zeros(r, n, dtype=torch.bool, device=lo.device)
    kth_lo = torch.sort(lo, dim=1).values[:, k - 1 : k]
    kth_hi = torch.sort(hi, dim=1).values[:, k - 1 : k]
    band_lo = _tie_band(lo, rtol) if rtol else torch.zeros_like(kth_lo)
    band_hi = _tie_band(hi, rtol) if rtol else torch.zeros_like(kth_hi)
    below = hi < kth_lo - band_hi  # key 0 for every values within the bounds
    above = lo > kth_hi + band_hi  # key 2
    tied = (lo >= kth_hi - band_lo) & (hi <= kth_lo + band_lo)  # key 1
    open_ = ~(below | tied | above)
    settled = ((~above).sum(dim=1, keepdim=True) == k) | ~open_.any(dim=1, keepdim=True)
    return open_ & ~settled


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
