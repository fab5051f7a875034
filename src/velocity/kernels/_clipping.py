"""Norm clipping of rows, shared by `clip` and `arc` (private)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["clip_rows"]


def clip_rows(out: Tensor, rows: Tensor, thresholds: Tensor, norms: Tensor) -> None:
    """Clip, in place, the ``rows`` of ``out`` to the given norm ``thresholds``.

    ``norms`` are the rows' current norms. A row with ±inf entries (infinite norm) becomes
    threshold times its limit direction (the signs of its infinite entries, normalised); a row
    holding NaN stays NaN.
    """
    for i, thr, norm in zip(rows.tolist(), thresholds.tolist(), norms.tolist(), strict=True):
        if norm <= thr:
            continue
        row = out[i]
        if norm == float("inf") and not bool(torch.isnan(row).any()):
            inf = torch.isinf(row)
            if bool(inf.any()):
                direction = torch.where(inf, torch.sign(row), torch.zeros_like(row))
                row.copy_(direction * (thr / float(direction.norm())))
                continue
        row.mul_(thr / norm)
