"""Mean around the median (MeaMed)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from velocity.kernels._checks import (
    check_bool,
    check_choice,
    check_f,
    check_updates,
    check_weights,
    require,
    to_work_dtype,
)
from velocity.kernels._coordinate import Reducer, coordinatewise_rule
from velocity.kernels.median import EVEN_RULES

__all__ = ["meamed"]

_INF = float("inf")


def closest_to_median(block: Tensor, drop: int, *, lower: bool = False) -> Tensor:
    """Per row of a sorted ``(c, n)`` block: mean of the n − drop values closest to its median
    (for even n the mean of the two middle values, or the lower one with ``lower``).

    The values closest to a point form a contiguous window of the sorted row, so only the
    ``drop + 1`` windows of length ``keep = n − drop`` are compared. A k-nearest set has the
    smallest largest distance and the smallest sum of distances of all k-subsets; the kernel
    ranks windows by the first and breaks its ties (repeated values) by the second, then the
    first window wins. Infinite distances only enter the first key.
    """
    n = block.shape[1]
    keep = n - drop
    if drop == 0:
        return torch.clamp(block.mean(dim=1), block[:, 0], block[:, -1])
    # Costs in float64 (float32 rounding would break near-ties between windows wrongly), on
    # the 2(drop + 1) edge values only.
    mid = n // 2
    if lower:
        mid = (n - 1) // 2
        pair = block[:, mid : mid + 1]
    else:
        pair = block[:, mid - 1 : mid + 1] if n % 2 == 0 else block[:, mid : mid + 1]
    med = pair.to(torch.float64).mean(dim=1, keepdim=True)
    low = block[:, : drop + 1].to(torch.float64)
    high = block[:, keep - 1 :].to(torch.float64)
    worst = torch.nan_to_num(torch.maximum(med - low, high - med), nan=_INF, posinf=_INF)
    start = worst.argmin(dim=1, keepdim=True)
    best = worst.gather(1, start)
    tied = torch.nonzero((worst == best).sum(dim=1) > 1).flatten()
    if tied.numel():
        # Repeated values: break ties by the total distance of the window.
        rows = block.index_select(0, tied).to(torch.float64)
        dist = (rows - med.index_select(0, tied)).abs()
        dist = torch.where(torch.isfinite(dist), dist, torch.zeros_like(dist))
        csum = torch.nn.functional.pad(dist.cumsum(dim=1), (1, 0))
        total = csum[:, keep:] - csum[:, : drop + 1]
        total = torch.where(worst[tied] == best[tied], total, torch.full_like(total, _INF))
        start[tied] = total.argmin(dim=1, keepdim=True)
    window = start + torch.arange(keep, device=block.device)[None, :]
    values = block.gather(1, window)
    # an average lies within its values; clamping removes a last-ulp rounding overshoot
    return torch.clamp(values.sum(dim=1) / keep, values[:, 0], values[:, -1])


def meamed(
    updates: Tensor,
    weights: Tensor | None = None,
    *,
    f: int,
    even: Literal["mean", "lower"] = "mean",
    strict: bool = True,
) -> Tensor:
    r"""Mean around the median, coordinate-wise (Xie et al. 2018, "Generalized Byzantine-
    tolerant SGD").

    For every coordinate k, with median :math:`m_k`, average the ``n − f`` values
    :math:`x_{ik}` with the smallest :math:`|x_{ik} − m_k|`. For even n, :math:`m_k` is the
    mean of the two middle values, or the lower of them with ``even="lower"`` (ByzPy's
    ``MeanOfMedians``). Needs ``n > 2f``; ``strict=False`` needs only ``n > f`` (what the
    computation needs, and ByzPy's check). ``weights`` are
    validated and ignored. The k non-finite rows (any NaN or ±inf entry) are dropped and count
    against f: the result is MeaMed of the n − k finite rows with f − k; k > f raises
    ``ValidationError`` (the policy in ``docs/kernels.md``).

    Examples
    --------
    >>> import torch
    >>> meamed(torch.tensor([[0.0], [1.0], [2.0], [3.0], [50.0]]), f=2).tolist()
    [2.0]
    """
    x = check_updates(updates, "meamed")
    n = x.shape[0]
    check_weights(weights, n, "meamed")
    f = check_f(f, "meamed")
    check_choice(even, "even", "meamed", EVEN_RULES)
    if check_bool(strict, "strict", "meamed"):
        require(n > 2 * f, f"meamed needs n > 2f; got n={n}, f={f}")
    else:
        require(n > f, f"meamed needs n > f (strict=False); got n={n}, f={f}")
    lower = even == "lower"

    def reducer(f: int | None) -> Reducer:
        assert f is not None
        return lambda block: closest_to_median(block, f, lower=lower)

    return coordinatewise_rule(to_work_dtype(x), reducer, rule="meamed", f=f, out_dtype=x.dtype)
