"""Bulyan."""

from __future__ import annotations

import torch
from torch import Tensor

from velocity.kernels._checks import (
    check_choice,
    check_f,
    check_updates,
    check_weights,
    drop_nonfinite,
    note_selected,
    require,
    to_work_dtype,
)
from velocity.kernels._coordinate import coordinatewise
from velocity.kernels._gram import pairwise_sq_distances_from
from velocity.kernels._select import smallest, tie_rtol
from velocity.kernels.krum import NEIGHBOR_RULES, Neighbors, krum_scores
from velocity.kernels.meamed import closest_to_median

__all__ = ["bulyan", "bulyan_selection"]


def bulyan_selection(dist: Tensor, f: int, neighbors: str = "n-f-2", rtol: float = 0.0) -> Tensor:
    """Indices of the θ = n − 2f rows chosen by Krum applied repeatedly to the rows left.

    Each step scores only the rows not chosen yet, among themselves, and takes the lowest
    score (ties: lower index).
    """
    n = dist.shape[0]
    left = list(range(n))
    chosen: list[int] = []
    for _ in range(n - 2 * f):
        idx = torch.tensor(left, device=dist.device)
        sub = dist.index_select(0, idx).index_select(1, idx)
        pick = int(smallest(krum_scores(sub, f, neighbors), 1, rtol)[0])
        chosen.append(left.pop(pick))
    return torch.tensor(chosen, dtype=torch.long)


def bulyan(
    updates: Tensor, weights: Tensor | None = None, *, f: int, neighbors: Neighbors = "n-f-2"
) -> Tensor:
    r"""Bulyan (El Mhamdi et al. 2018, "The Hidden Vulnerability of Distributed Learning in
    Byzantium").

    1. Select θ = n − 2f rows by applying Krum repeatedly to the rows not selected yet.
    2. For every coordinate, average the β = θ − 2f selected values closest to the
       coordinate-wise median of the selection.

    Needs ``n >= 4f + 3``. ``neighbors`` is passed to Krum (see :func:`krum`). ``weights`` are
    validated and ignored. Score ties go to the lower row index, as in :func:`krum`; in the
    last selection steps fewer than f + 3 rows remain, Krum then uses at most one neighbour
    and mutual nearest neighbours tie exactly, so the result can depend on the row order.
    The k non-finite rows (any NaN or ±inf entry) are dropped and count against f: the result
    is Bulyan of the n − k finite rows with f − k; k > f raises ``ValidationError`` (the
    policy in ``docs/kernels.md``).

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([[0.0], [0.1], [0.2], [0.3], [0.4], [0.5], [90.0]])
    >>> round(bulyan(x, f=1).item(), 4)
    0.2
    """
    x = check_updates(updates, "bulyan")
    n = x.shape[0]
    check_weights(weights, n, "bulyan")
    f = check_f(f, "bulyan")
    check_choice(neighbors, "neighbors", "bulyan", NEIGHBOR_RULES)
    require(n >= 4 * f + 3, f"bulyan needs n >= 4f + 3; got n={n}, f={f}")
    kept = drop_nonfinite(to_work_dtype(x), "bulyan", f)
    assert kept.f is not None
    work, f = kept.x, kept.f
    dist = pairwise_sq_distances_from(work)
    chosen = bulyan_selection(dist, f, neighbors, tie_rtol(work.dtype))
    chosen = chosen.sort().values
    note_selected(kept.rows_of(chosen), n)
    out = coordinatewise(
        work, lambda block: closest_to_median(block, 2 * f), rows=chosen, out_dtype=x.dtype
    )
    assert out is not None
    return out
