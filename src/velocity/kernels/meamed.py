"""Mean around the median (MeaMed)."""

from __future__ import annotations

import torch
from torch import Tensor

from velocity.kernels._checks import check_f, check_updates, check_weights, require, to_work_dtype
from velocity.kernels._coordinate import coordinatewise
from velocity.kernels.median import sorted_median

__all__ = ["meamed"]


def closest_to_median(block: Tensor, drop: int) -> Tensor:
    """Per row of a sorted ``(c, n)`` block: mean of the n − drop values closest to its median.

    The values closest to a point form a contiguous window of the sorted row, so the kernel
    only compares the ``drop + 1`` windows of length n − drop: window s costs
    ``max(med − a[s], a[s + n − drop − 1] − med)`` and the first cheapest wins.
    """
    n = block.shape[1]
    keep = n - drop
    if drop == 0:
        return block.mean(dim=1)
    med = sorted_median(block)[:, None]
    low = block[:, : drop + 1]
    high = block[:, keep - 1 :]
    cost = torch.maximum(med - low, high - med)
    start = torch.nan_to_num(cost, nan=float("inf")).argmin(dim=1, keepdim=True)
    # Window s covers [s, s + keep): the common core [drop, keep) plus a[s:drop] plus
    # a[keep:keep + s]. Edge sums from suffix/prefix sums over the two short edges only.
    core = block[:, drop:keep].sum(dim=1)
    zero = torch.zeros(block.shape[0], 1, dtype=block.dtype, device=block.device)
    lower_edge = block[:, :drop]
    lower_suffix = torch.cat([lower_edge.flip(1).cumsum(1).flip(1), zero], dim=1)
    upper_prefix = torch.cat([zero, block[:, keep:].cumsum(1)], dim=1)
    total = (
        core + lower_suffix.gather(1, start).squeeze(1) + upper_prefix.gather(1, start).squeeze(1)
    )
    return total / keep


def meamed(updates: Tensor, weights: Tensor | None = None, *, f: int) -> Tensor:
    r"""Mean around the median, coordinate-wise (Xie et al. 2018, "Generalized Byzantine-
    tolerant SGD").

    For every coordinate k, with median :math:`m_k`, average the ``n − f`` values
    :math:`x_{ik}` with the smallest :math:`|x_{ik} − m_k|`. Needs ``n > 2f``. ``weights`` are
    validated and ignored.

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
    require(n > 2 * f, f"meamed needs n > 2f; got n={n}, f={f}")
    return coordinatewise(
        to_work_dtype(x), lambda block: closest_to_median(block, f), out_dtype=x.dtype
    )
