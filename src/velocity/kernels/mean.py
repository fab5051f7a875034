"""Weighted mean (FedAvg)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from velocity.errors import ValidationError
from velocity.kernels._checks import (
    check_choice,
    check_updates,
    check_weights,
    drop_nonfinite,
    finite_rows,
    to_work_dtype,
)

__all__ = ["mean", "nonfinite_rows"]

_MODES = ("drop", "propagate", "raise")


def nonfinite_rows(updates: Tensor) -> Tensor:
    """Boolean ``(n,)`` mask of the rows that hold a NaN or ±inf entry.

    >>> import torch
    >>> nonfinite_rows(torch.tensor([[1.0, 2.0], [float("inf"), 0.0]])).tolist()
    [False, True]
    """
    x = check_updates(updates, "nonfinite_rows")
    return ~finite_rows(to_work_dtype(x))


def mean(
    updates: Tensor,
    weights: Tensor | None = None,
    *,
    nonfinite: Literal["drop", "propagate", "raise"] = "drop",
) -> Tensor:
    r"""Weighted mean of the rows (FedAvg; McMahan et al. 2017).

    .. math:: \bar x = \frac{\sum_i w_i x_i}{\sum_i w_i}

    Parameters
    ----------
    updates : Tensor, shape (n, d)
    weights : Tensor, shape (n,), optional
        Non-negative weights, usually sample counts; uniform when omitted.
    nonfinite : {"drop", "propagate", "raise"}
        Rows holding NaN or ±inf (see :func:`nonfinite_rows`) are left out (``"drop"``, the
        default: the policy every aggregator follows, see ``docs/kernels.md``; the mean has no
        f, so only all n rows non-finite raises ``ValidationError``), kept so the result is
        non-finite (``"propagate"``), or refused with an error naming them (``"raise"``).

    Returns
    -------
    Tensor, shape (d,)

    Examples
    --------
    >>> import torch
    >>> mean(torch.tensor([[0.0, 2.0], [2.0, 4.0]]), torch.tensor([1.0, 3.0])).tolist()
    [1.5, 3.5]
    >>> mean(torch.tensor([[1.0, 1.0], [float("nan"), 0.0]])).tolist()
    [1.0, 1.0]
    """
    x = check_updates(updates, "mean")
    n = x.shape[0]
    w = check_weights(weights, n, "mean")
    check_choice(nonfinite, "nonfinite", "mean", _MODES)
    work = to_work_dtype(x)
    if nonfinite != "propagate":
        # One pass in the common case: with every coefficient > 0, a NaN or ±inf entry makes
        # its column of the result non-finite (c·inf = ±inf, inf − inf = NaN, NaN spreads),
        # hence the sum of the result, so a finite sum means finite rows. Otherwise the rows
        # are checked exactly; finite rows whose mean (or its sum) overflows keep the result
        # they would have had after the check.
        w_all = torch.ones(n, dtype=torch.float64) if w is None else w
        total = float(w_all.sum())
        if total > 0.0:
            coef = (w_all.to(x.device) / total).to(work.dtype)
            out = coef @ work
            if bool(torch.isfinite(out.sum()) & (coef > 0).all()):
                return out.to(x.dtype)
            ok = finite_rows(work)
            if bool(ok.all()):
                return out.to(x.dtype)
        else:
            ok = finite_rows(work)
        if nonfinite == "raise" and not bool(ok.all()):
            bad = torch.nonzero(~ok).flatten().tolist()
            raise ValidationError(f"mean: rows {bad} hold non-finite values")
        if nonfinite == "drop":
            kept = drop_nonfinite(work, "mean", finite=ok)
            work, w = kept.x, kept.take(w)
    if w is None:
        w = torch.ones(work.shape[0], dtype=torch.float64)
    w = w.to(x.device)
    total = float(w.sum())
    if total <= 0.0:
        raise ValidationError("mean: the weights of the rows used sum to 0; need a positive sum")
    out = (w / total).to(work.dtype) @ work
    return out.to(x.dtype)
