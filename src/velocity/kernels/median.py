"""Coordinate-wise median."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from velocity.kernels._checks import check_choice, check_updates, check_weights, to_work_dtype
from velocity.kernels._coordinate import coordinatewise_rule

__all__ = ["median"]

EVEN_RULES = ("mean", "lower")
"""How the median of an even number of values is taken: the mean of the two middle values,
or the lower of them (``torch.median``'s convention, and ByzPy's)."""


def sorted_median(block: Tensor) -> Tensor:
    """Median of each row of a sorted ``(c, n)`` block; even n: mean of the middle two."""
    n = block.shape[1]
    if n % 2:
        return block[:, n // 2]
    return 0.5 * (block[:, n // 2 - 1] + block[:, n // 2])


def sorted_lower_median(block: Tensor) -> Tensor:
    """Lower median of each row of a sorted ``(c, n)`` block: the value at ``(n - 1) // 2``."""
    return block[:, (block.shape[1] - 1) // 2]


def median(
    updates: Tensor, weights: Tensor | None = None, *, even: Literal["mean", "lower"] = "mean"
) -> Tensor:
    r"""Coordinate-wise median (Yin et al. 2018, "Byzantine-Robust Distributed Learning").

    .. math:: \mathrm{med}(x_1, \dots, x_n)_k = \text{median of } \{x_{1k}, \dots, x_{nk}\}

    For even n the two middle values are averaged; ``even="lower"`` takes the lower of them
    instead (``torch.median``'s and ByzPy's convention; odd n is unaffected). Robust while
    fewer than half of the values of every coordinate are Byzantine. ``weights`` are
    validated and ignored: every row is one vote. Non-finite rows (any NaN or ±inf entry) are
    dropped and the median is that of the finite rows; all rows non-finite raises
    ``ValidationError`` (the policy in ``docs/kernels.md``).

    Examples
    --------
    >>> import torch
    >>> median(torch.tensor([[1.0, 9.0], [2.0, 8.0], [100.0, -5.0]])).tolist()
    [2.0, 8.0]
    >>> median(torch.tensor([[1.0], [2.0], [4.0], [100.0]])).tolist()
    [3.0]
    >>> median(torch.tensor([[1.0], [2.0], [4.0], [100.0]]), even="lower").tolist()
    [2.0]
    """
    x = check_updates(updates, "median")
    check_weights(weights, x.shape[0], "median")
    check_choice(even, "even", "median", EVEN_RULES)
    reduce = sorted_median if even == "mean" else sorted_lower_median
    return coordinatewise_rule(
        to_work_dtype(x), lambda _: reduce, rule="median", f=None, out_dtype=x.dtype
    )
