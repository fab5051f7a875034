"""Public access to the distance engine."""

from __future__ import annotations

from torch import Tensor

from velocity.kernels._checks import check_updates, to_work_dtype
from velocity.kernels._gram import finite_rows, pairwise_sq_distances_from

__all__ = ["pairwise_sq_distances"]


def pairwise_sq_distances(updates: Tensor) -> Tensor:
    """float64 ``(n, n)`` squared Euclidean distances between the rows of ``updates``.

    Computed from one blocked, centred Gram matrix with float64 accumulation; near-duplicate
    pairs are recomputed inside their cluster (see :mod:`velocity.kernels._gram`). Rows with
    non-finite entries are at distance +inf from every other row.

    Examples
    --------
    >>> import torch
    >>> pairwise_sq_distances(torch.tensor([[0.0, 0.0], [3.0, 4.0]])).tolist()
    [[0.0, 25.0], [25.0, 0.0]]
    """
    x = to_work_dtype(check_updates(updates, "pairwise_sq_distances"))
    return pairwise_sq_distances_from(x, finite_rows(x))
