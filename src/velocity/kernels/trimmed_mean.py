"""Coordinate-wise trimmed mean."""

from __future__ import annotations

import torch
from torch import Tensor

from velocity.kernels._checks import check_f, check_updates, check_weights, require, to_work_dtype
from velocity.kernels._coordinate import Reducer, coordinatewise_rule

__all__ = ["trimmed_mean"]


def trimmed_mean(updates: Tensor, weights: Tensor | None = None, *, f: int) -> Tensor:
    r"""Coordinate-wise trimmed mean (Yin et al. 2018).

    For every coordinate, drop the ``f`` smallest and the ``f`` largest of the n values and
    average the remaining ``n − 2f``:

    .. math:: \mathrm{TM}_f(x)_k = \frac{1}{n-2f} \sum_{j=f+1}^{n-f} x_{(j)k}

    where :math:`x_{(j)k}` is the j-th smallest value of coordinate k. Needs ``n > 2f``.
    ``weights`` are validated and ignored. The k non-finite rows (any NaN or ±inf entry) are
    dropped and count against f: the result is the trimmed mean of the n − k finite rows with
    f − k; k > f raises ``ValidationError`` (the policy in ``docs/kernels.md``).

    Examples
    --------
    >>> import torch
    >>> trimmed_mean(torch.tensor([[1.0], [2.0], [3.0], [1000.0]]), f=1).tolist()
    [2.5]
    """
    x = check_updates(updates, "trimmed_mean")
    n = x.shape[0]
    check_weights(weights, n, "trimmed_mean")
    f = check_f(f, "trimmed_mean")
    require(n > 2 * f, f"trimmed_mean needs n > 2f; got n={n}, f={f}")

    def reducer(f: int | None) -> Reducer:
        assert f is not None

        def reduce(block: Tensor) -> Tensor:
            n = block.shape[1]
            kept = block[:, f : n - f]
            # an average lies within its values; clamping removes a last-ulp rounding overshoot
            return torch.clamp(kept.sum(dim=1) / (n - 2 * f), kept[:, 0], kept[:, -1])

        return reduce

    return coordinatewise_rule(
        to_work_dtype(x), reducer, rule="trimmed_mean", f=f, out_dtype=x.dtype
    )
