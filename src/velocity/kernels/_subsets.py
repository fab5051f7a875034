"""Exact search over the (n − f)-subsets of the rows (private; MDA and SMEA)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import Tensor

from velocity.kernels._checks import require

__all__ = ["best_subset"]

_BATCH = 4096


def best_subset(
    n: int,
    f: int,
    score: Callable[[Tensor], Tensor],
    *,
    rule: str,
    max_subsets: int,
    device: torch.device,
) -> Tensor:
    """The first (in ``itertools.combinations`` order) (n − f)-subset with the lowest score.

    ``score`` maps a batch of subsets ``(b, n − f)`` (long indices) to ``(b,)`` scores; NaN
    counts as +inf. Refuses, before any work, when there are more than ``max_subsets``.
    """
    count = math.comb(n, f)
    require(
        count <= max_subsets,
        f"{rule}: exact search over C(n, f) = C({n}, {f}) = {count} subsets exceeds "
        f"max_subsets={max_subsets}; lower f, raise max_subsets, or use a polynomial rule "
        "(multi_krum, nnm + trimmed_mean)",
    )
    combos = itertools.combinations(range(n), n - f)
    best_score = float("inf")
    best: tuple[int, ...] | None = None
    while True:
        chunk = list(itertools.islice(combos, _BATCH))
        if not chunk:
            break
        idx = torch.tensor(chunk, dtype=torch.long, device=device)
        scores = torch.nan_to_num(score(idx), nan=float("inf"), posinf=float("inf"))
        pos = int(torch.argmin(scores))
        value = float(scores[pos])
        if best is None or value < best_score:
            best_score, best = value, chunk[pos]
    assert best is not None
    return torch.tensor(best, dtype=torch.long)
