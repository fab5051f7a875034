"""How evenly a quantity (per-client accuracy, loss, reward) is spread: Gini and a summary
(private)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from velocity._validation import Boolean, Real, check_value
from velocity.errors import ValidationError

__all__ = ["Values", "fairness_summary", "gini"]

Values: TypeAlias = Tensor | NDArray[Any] | Sequence[float] | Mapping[Any, float]
"""What :func:`gini` accepts: a 1-D tensor or array, a sequence of numbers, or a mapping
whose values are the numbers (client id -> accuracy)."""


def _as_array(values: object, owner: str) -> NDArray[np.float64]:
    """``values`` as a non-empty, finite, non-negative 1-D float64 array, or a ValidationError
    naming the offending entries."""
    if isinstance(values, Mapping):
        values = list(values.values())
    if isinstance(values, Tensor):
        if values.ndim != 1 or values.dtype == torch.bool or values.is_complex():
            raise ValidationError(
                f"{owner}: values must be a 1-D real tensor; got {values.dtype} of shape "
                f"{tuple(values.shape)}"
            )
        array = values.detach().to(device="cpu", dtype=torch.float64).numpy()
    elif isinstance(values, np.ndarray):
        if values.ndim != 1 or values.dtype.kind not in "iuf":
            raise ValidationError(
                f"{owner}: values must be a 1-D real array; got {values.dtype} of shape "
                f"{values.shape}"
            )
        array = values.astype(np.float64)
    elif isinstance(values, Sequence) and not isinstance(values, str | bytes):
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, numbers.Real)]
        if bad:
            raise ValidationError(f"{owner}: values must be real numbers; got {bad[0]!r}")
        array = np.array([float(v) for v in values], dtype=np.float64)
    else:
        raise ValidationError(
            f"{owner}: values must be a 1-D tensor, array, sequence or mapping of numbers; "
            f"got {type(values).__name__}"
        )
    if array.size == 0:
        raise ValidationError(f"{owner}: values is empty; need at least one value")
    nonfinite = np.flatnonzero(~np.isfinite(array)).tolist()
    if nonfinite:
        raise ValidationError(
            f"{owner}: values must be finite; entries {nonfinite} are NaN or ±inf"
        )
    negative = np.flatnonzero(array < 0).tolist()
    if negative:
        raise ValidationError(
            f"{owner}: values must be >= 0 (the Gini coefficient of signed values is not a "
            f"measure of inequality); entries {negative} are negative"
        )
    return array


def _gini(sorted_values: NDArray[np.float64]) -> float:
    """Population Gini of ascending, non-negative values (0.0 when they are all zero)."""
    n = sorted_values.size
    total = math.fsum(sorted_values.tolist())
    if total == 0.0:
        return 0.0
    ranks = 2.0 * np.arange(1, n + 1, dtype=np.float64) - n - 1.0
    return math.fsum((ranks * sorted_values).tolist()) / (n * total)


def gini(values: Values, *, sample: bool = False) -> float:
    r"""Gini coefficient of non-negative values: 0 for perfect equality, → 1 for one holder.

    Population form (Gini 1912; e.g. Cowell, "Measuring Inequality", 2011):

    .. math:: G = \frac{\sum_{i=1}^n \sum_{j=1}^n |x_i - x_j|}{2 n^2 \mu}
        = \frac{\sum_{i=1}^n (2i - n - 1)\, x_{(i)}}{n \sum_i x_i}

    with :math:`\mu` the mean and :math:`x_{(i)}` the values in ascending order; the second
    form is what is computed, in O(n log n) (one sort, compensated sums). Its range is
    :math:`[0, 1 - 1/n]`. ``sample=True`` applies the small-sample correction
    :math:`G \cdot n / (n - 1)`, the unbiased form whose range is [0, 1] (needs n >= 2).
    All values zero: 0.0 (every holder has the same, nothing).

    Parameters
    ----------
    values : tensor, array, sequence or mapping of numbers
        Finite and >= 0 (per-client accuracies or losses, say); a mapping's values are used.
    sample : bool
        Apply the n/(n − 1) correction.

    Returns
    -------
    float

    Raises
    ------
    ValidationError
        No values, a negative or non-finite value (the message names the entries), or
        ``sample=True`` with one value.

    Examples
    --------
    >>> gini([1, 1, 1, 1])
    0.0
    >>> gini([0, 0, 0, 1])
    0.75
    >>> gini([0, 0, 0, 1], sample=True)
    1.0
    >>> gini({"a": 0.9, "b": 0.9})
    0.0
    """
    sample = check_value("gini", "sample", sample, Boolean())
    array = np.sort(_as_array(values, "gini"), kind="stable")
    g = _gini(array)
    if sample:
        n = array.size
        if n < 2:
            raise ValidationError("gini: sample=True needs at least 2 values; got 1")
        g *= n / (n - 1)
    return g


def fairness_summary(values: Mapping[str, float], *, tail: float = 0.1) -> dict[str, float]:
    r"""Summary of a per-client quantity (typically test accuracy): spread and tails.

    For the n values :math:`a_k` (ascending :math:`a_{(1)} \le \dots \le a_{(n)}`) and
    :math:`t = \max(1, \lceil \text{tail} \cdot n \rceil)` clients in each tail:

    - ``mean`` :math:`\bar a`; ``std`` the population standard deviation
      :math:`\sqrt{\frac{1}{n} \sum_k (a_k - \bar a)^2}` (the spread of these clients, as in
      the variance of accuracies reported by Li et al. 2020, "Fair Resource Allocation in
      Federated Learning");
    - ``min``, ``max``;
    - ``worst_10pct`` :math:`\frac{1}{t}\sum_{i \le t} a_{(i)}` and ``best_10pct``
      :math:`\frac{1}{t}\sum_{i > n - t} a_{(i)}` (the mean of the lowest and of the highest
      ``tail`` fraction; the names say 10 % whatever ``tail`` is, so that summaries of runs
      stay comparable by key) — for accuracies, worst is lowest;
    - ``gini`` (:func:`gini`, population form);
    - ``n``.

    Parameters
    ----------
    values : mapping of str to float
        Client id -> value; finite and >= 0.
    tail : float
        Fraction of clients in each tail, in (0, 1]; default 0.1.

    Returns
    -------
    dict of str to float
        The keys above, in that order (``n`` as a float, so that the dict is all floats).

    Examples
    --------
    >>> s = fairness_summary({f"c{i}": a for i, a in enumerate([0.5, 0.7, 0.8, 0.9, 1.0])})
    >>> s["mean"], s["min"], s["worst_10pct"], s["best_10pct"], s["n"]
    (0.78, 0.5, 0.5, 1.0, 5.0)
    """
    if not isinstance(values, Mapping):
        raise ValidationError(
            f"fairness_summary: values must be a mapping of client id to number; got "
            f"{type(values).__name__}"
        )
    tail = check_value("fairness_summary", "tail", tail, Real(low=0, high=1, low_open=True))
    array = np.sort(_as_array(values, "fairness_summary"), kind="stable")
    n = array.size
    t = max(1, math.ceil(tail * n))
    mean = math.fsum(array.tolist()) / n
    variance = math.fsum(((array - mean) ** 2).tolist()) / n
    return {
        "mean": mean,
        "std": math.sqrt(variance),
        "min": float(array[0]),
        "max": float(array[-1]),
        "worst_10pct": math.fsum(array[:t].tolist()) / t,
        "best_10pct": math.fsum(array[n - t :].tolist()) / t,
        "gini": _gini(array),
        "n": float(n),
    }
