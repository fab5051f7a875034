"""Krum and Multi-Krum."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from velocity.kernels._checks import (
    check_bool,
    check_choice,
    check_f,
    check_int,
    check_updates,
    check_weights,
    note_selected,
    require,
    to_work_dtype,
)
from velocity.kernels._gram import SqDistanceBounds, distance_bounds
from velocity.kernels._select import mean_of_rows, smallest, tie_rtol, undetermined_per_row

__all__ = ["krum", "krum_scores", "multi_krum"]

Neighbors = Literal["n-f-2", "n-f-1"]
NEIGHBOR_RULES = ("n-f-2", "n-f-1")


def neighbour_count(rows: int, f: int, neighbors: str) -> int:
    """How many nearest rows enter a Krum score among ``rows`` rows, clamped to [0, rows − 1]."""
    k = rows - f - (2 if neighbors == "n-f-2" else 1)
    return max(0, min(k, rows - 1))


def krum_scores(dist: Tensor, f: int, neighbors: str = "n-f-2") -> Tensor:
    """Krum score of every row from a squared-distance matrix ``(n, n)``.

    The score of row i is the sum of its squared distances to its k nearest other rows, with
    k = n − f − 2 (``"n-f-2"``, Blanchard et al. 2017) or n − f − 1 (``"n-f-1"``).
    """
    n = dist.shape[0]
    k = neighbour_count(n, f, neighbors)
    if k == 0:
        return torch.zeros(n, dtype=dist.dtype, device=dist.device)
    others = dist.clone()
    others.fill_diagonal_(float("inf"))
    return others.sort(dim=1).values[:, :k].sum(dim=1)


def _score_bounds(bounds: SqDistanceBounds, k: int) -> tuple[Tensor, Tensor]:
    """Bounds on every Krum score from bounds on the distances (a sum of the k smallest is
    monotone in every entry), widened by the float64 rounding of the sums."""
    lo, hi = bounds.lo(), bounds.hi()
    lo.fill_diagonal_(float("inf"))
    hi.fill_diagonal_(float("inf"))
    slack = 2.0 * (k + 1) * 2.0**-53
    lo_s = lo.sort(dim=1).values[:, :k].sum(dim=1) * (1.0 - slack)
    hi_s = hi.sort(dim=1).values[:, :k].sum(dim=1) * (1.0 + slack)
    return lo_s, hi_s


def select_by_score(
    bounds: SqDistanceBounds, f: int, neighbors: str, m: int, rtol: float
) -> Tensor:
    """Indices of the m rows of smallest Krum score (ties to the lower index), exactly as from
    the accurate distances, with as little refinement as the decision needs.

    Scores are bounded from the distance bounds; the rows whose selection the bounds leave
    open (:func:`velocity.kernels._select.undetermined_per_row`) get their distances to every
    row recomputed (:meth:`SqDistanceBounds.refine`); if that is most of the rows or still
    leaves the choice open, all distances come from the accurate engine.
    """
    rows = bounds.value.shape[0]
    k = neighbour_count(rows, f, neighbors)
    for attempt in range(2):
        if bounds.exact or k == 0:
            break
        lo_s, hi_s = _score_bounds(bounds, k)
        todo = torch.nonzero(undetermined_per_row(lo_s[None], hi_s[None], m, rtol)[0]).flatten()
        if todo.numel() == 0:
            break
        if attempt == 0 and 4 * todo.numel() <= rows:
            bounds.refine(todo)
        else:
            bounds.make_exact()
    return smallest(krum_scores(bounds.value, f, neighbors), m, rtol)


def _validate(
    updates: Tensor, weights: Tensor | None, f: int, neighbors: str, rule: str, strict: bool
) -> int:
    n = updates.shape[0]
    check_weights(weights, n, rule)
    check_f(f, rule)
    check_choice(neighbors, "neighbors", rule, NEIGHBOR_RULES)
    if check_bool(strict, "strict", rule):
        require(n > 2 * f + 2, f"{rule} needs n > 2f + 2; got n={n}, f={f}")
    else:
        require(n > f + 1, f"{rule} needs n > f + 1 (strict=False); got n={n}, f={f}")
    return n


def krum(
    updates: Tensor,
    weights: Tensor | None = None,
    *,
    f: int,
    neighbors: Neighbors = "n-f-2",
    strict: bool = True,
) -> Tensor:
    r"""Krum (Blanchard et al. 2017, "Machine Learning with Adversaries").

    Returns the row with the smallest score
    :math:`s(i) = \sum_{j \in N_k(i)} \|x_i - x_j\|^2`, :math:`N_k(i)` the k nearest other
    rows. The paper uses k = n − f − 2 (the default); ByzFL and ByzPy use k = n − f − 1
    (``neighbors="n-f-1"``). Needs ``n > 2f + 2`` (Blanchard et al.'s condition);
    ``strict=False`` needs only ``n > f + 1`` (ByzPy's check: at least one neighbour with
    ``"n-f-1"``). Ties go to the lower row index. ``weights``
    are validated and ignored. The k non-finite rows (any NaN or ±inf entry) are dropped and
    count against f: the result is Krum of the n − k finite rows with f − k; k > f raises
    ``ValidationError`` (the policy in ``docs/kernels.md``).

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([[0.0], [0.1], [0.2], [0.3], [50.0]])
    >>> [round(v, 4) for v in krum(x, f=1).tolist()]
    [0.1]
    """
    x = check_updates(updates, "krum")
    _validate(x, weights, f, neighbors, "krum", strict)
    kept, bounds = distance_bounds(to_work_dtype(x), "krum", f)
    work = kept.x
    assert kept.f is not None
    best = int(select_by_score(bounds, kept.f, neighbors, 1, tie_rtol(work.dtype))[0])
    if kept.keep is not None:
        best = int(kept.keep[best])
    note_selected([best], x.shape[0])
    return x[best].clone()


def multi_krum(
    updates: Tensor,
    weights: Tensor | None = None,
    *,
    f: int,
    m: int | None = None,
    neighbors: Neighbors = "n-f-2",
    strict: bool = True,
) -> Tensor:
    r"""Multi-Krum (Blanchard et al. 2017; El Mhamdi et al. 2018).

    The mean of the ``m`` rows with the smallest Krum scores (see :func:`krum`); ``m=None``
    means n − f. ``m=1`` is Krum. Needs ``n > 2f + 2`` (``n > f + 1`` with ``strict=False``,
    as for :func:`krum`) and ``1 <= m <= n``. ``weights`` are
    validated and ignored. The k non-finite rows (any NaN or ±inf entry) are dropped and
    count against f: the result is Multi-Krum of the n' = n − k finite rows with f − k (so
    ``m=None`` still averages n − f rows) and m capped at n'; k > f raises
    ``ValidationError`` (the policy in ``docs/kernels.md``).

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([[0.0], [0.1], [0.2], [0.3], [50.0]])
    >>> round(multi_krum(x, f=1).item(), 4)
    0.15
    """
    x = check_updates(updates, "multi_krum")
    n = _validate(x, weights, f, neighbors, "multi_krum", strict)
    if m is None:
        m = n - f
    m = check_int(m, "m", "multi_krum", minimum=1)
    require(m <= n, f"multi_krum needs 1 <= m <= n; got m={m}, n={n}")
    kept, bounds = distance_bounds(to_work_dtype(x), "multi_krum", f)
    work = kept.x
    assert kept.f is not None
    chosen = select_by_score(bounds, kept.f, neighbors, min(m, work.shape[0]), tie_rtol(work.dtype))
    note_selected(kept.rows_of(chosen), n)
    return mean_of_rows(work, chosen).to(x.dtype)
