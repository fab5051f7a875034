"""Exact search over the (n − f)-subsets of the rows (private; MDA and SMEA)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import Tensor

from velocity.kernels._checks import require

__all__ = ["best_subset"]

_BATCH = 8192

Scorer = Callable[[Tensor], Tensor]
"""Maps a batch of kept subsets ``(b, n − f)`` (ascending long indices) to ``(b,)`` scores."""


def best_subset(
    n: int,
    f: int,
    score: Scorer,
    *,
    rule: str,
    max_subsets: int,
    device: torch.device,
) -> Tensor:
    """The first (in ``itertools.combinations(range(n), n − f)`` order) subset of lowest score.

    NaN scores count as +inf. Refuses, before any work, when there are more than
    ``max_subsets`` subsets. The search enumerates the f removed rows rather than the n − f
    kept ones (f is the small side): the complements of the kept subsets in lexicographic
    order are the removed subsets in reverse lexicographic order, so the kept-order rank of
    removed subset i is ``count − 1 − i``.
    """
    count = math.comb(n, f)
    require(
        count <= max_subsets,
        f"{rule}: exact search over C(n, f) = C({n}, {f}) = {count} subsets exceeds "
        f"max_subsets={max_subsets}; lower f, raise max_subsets, or use a polynomial rule "
        "(multi_krum, nnm + trimmed_mean)",
    )
    removed_sets = itertools.combinations(range(n), f)
    best_score, best_rank = float("inf"), count
    best_kept: Tensor | None = None
    first = 0
    while chunk := list(itertools.islice(removed_sets, _BATCH)):
        b = len(chunk)
        keep = torch.ones(b, n, dtype=torch.bool, device=device)
        if f:
            removed = torch.tensor(chunk, dtype=torch.long, device=device)
            keep.scatter_(1, removed, False)
        kept = keep.nonzero()[:, 1].view(b, n - f)
        scores = torch.nan_to_num(score(kept), nan=float("inf"), posinf=float("inf"))
        low = float(scores.min())
        # among this batch's minima, the last removed subset is the first kept one
        j = int(torch.nonzero(scores == low).max()) if low < float("inf") else 0
        rank = count - 1 - (first + j)
        if best_kept is None or low < best_score or (low == best_score and rank < best_rank):
            best_score, best_rank, best_kept = low, rank, kept[j]
        first += b
    assert best_kept is not None
    return best_kept.cpu()
