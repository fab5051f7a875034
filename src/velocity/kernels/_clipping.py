"""Norm clipping of rows, shared by `clip` and `arc` (private)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["clip_rows", "row_norms"]


def row_norms(x: Tensor) -> Tensor:
    """``(n,)`` L2 norms of the rows, computed in float32 (float64 for float64 data).

    They double as the candidate filter of the finite check (a NaN or ±inf entry makes its
    row's norm non-finite), so clipping needs no extra pass over the data.
    """
    norms: Tensor = torch.linalg.vector_norm(x.float() if x.dtype != torch.float64 else x, dim=1)
    return norms


def clip_rows(out: Tensor, rows: Tensor, thresholds: Tensor, norms: Tensor) -> None:
    """Clip, in place, the ``rows`` of ``out`` (finite rows) to the given norm ``thresholds``.

    ``norms`` are the rows' current norms; a finite row whose norm overflows to +inf becomes
    zero, as ``row · (threshold / inf)`` says.
    """
    for i, thr, norm in zip(rows.tolist(), thresholds.tolist(), norms.tolist(), strict=True):
        if norm <= thr:
            continue
        out[i].mul_(thr / norm)
