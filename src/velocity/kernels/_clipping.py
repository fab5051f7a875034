"""Norm clipping of rows, shared by `clip` and `arc` (private)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["clip_factors", "clip_rows", "row_norms", "scaled_copy"]


def row_norms(x: Tensor) -> Tensor:
    """``(n,)`` L2 norms of the rows, computed in float32 (float64 for float64 data).

    They double as the candidate filter of the finite check (a NaN or ±inf entry makes its
    row's norm non-finite), so clipping needs no extra pass over the data.
    """
    norms: Tensor = torch.linalg.vector_norm(x.float() if x.dtype != torch.float64 else x, dim=1)
    return norms


def _factor_dtype(x: Tensor) -> torch.dtype:
    """The dtype a row is scaled in: float64 for float64 data, float32 otherwise (as
    ``row.mul_(python_float)`` computes)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def clip_factors(norms: Tensor, thresholds: Tensor | float) -> Tensor:
    """float64 ``threshold / norm`` where ``norm > threshold``, else 1, per row.

    Divided as tensors (correctly rounded, as Python's ``thr / norm``): ``float / tensor``
    would multiply by the reciprocal, one rounding more.
    """
    n64 = norms.to(torch.float64)
    thr = torch.as_tensor(thresholds, dtype=torch.float64, device=n64.device)
    return torch.where(n64 > thr, torch.div(thr, n64), torch.ones_like(n64))


def clip_rows(out: Tensor, rows: Tensor, thresholds: Tensor, norms: Tensor) -> None:
    """Clip, in place, the ``rows`` of ``out`` (finite rows) to the given norm ``thresholds``.

    ``norms`` are the rows' current norms; a finite row whose norm overflows to +inf becomes
    zero, as ``row · (threshold / inf)`` says.
    """
    for i, thr, norm in zip(rows.tolist(), thresholds.tolist(), norms.tolist(), strict=True):
        if norm <= thr:
            continue
        out[i].mul_(thr / norm)


def scaled_copy(x: Tensor, factors: Tensor) -> Tensor:
    """A new tensor: row i of ``x`` times ``factors[i]`` (float64), in one read and one write.

    The same values as copying ``x`` and then ``row.mul_(factor)`` on the rows whose factor is
    not 1 (a factor of 1 leaves a finite value unchanged), without reading and writing those
    rows a second time. (Computing each chunk's norms and writing it out while in cache saves
    no time: the write of a new ``(n, d)`` tensor costs 3 reads, and small chunks slow the
    threads.)
    """
    out = torch.empty_like(x)
    torch.mul(x, factors.to(_factor_dtype(x))[:, None], out=out)
    return out
