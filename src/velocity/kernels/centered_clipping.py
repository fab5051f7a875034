"""Centered clipping."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from velocity.errors import ValidationError
from velocity.kernels._checks import (
    check_choice,
    check_int,
    check_nonneg_float,
    check_updates,
    check_weights,
    drop_nonfinite,
    to_work_dtype,
)
from velocity.kernels.geometric_median import INITS, initial_alpha, median_centred_basis

__all__ = ["centered_clipping"]


def centered_clipping(
    updates: Tensor,
    weights: Tensor | None = None,
    *,
    c_tau: float,
    M: int = 10,
    eps: float = 1e-12,
    init: Literal["mean", "median", "zero"] | Tensor = "mean",
) -> Tensor:
    r"""Centered clipping (Karimireddy, He & Jaggi 2021, "Learning from History for
    Byzantine Robust Optimization").

    ``M`` iterations of

    .. math:: v \leftarrow v + \frac{1}{n}\sum_{i=1}^{n} (x_i - v)
              \min\Big(1, \frac{c_\tau}{\max(\|x_i - v\|, \varepsilon)}\Big)

    starting from ``init``: ``"mean"``, ``"median"``, ``"zero"``, or a ``(d,)`` tensor such as
    the previous round's aggregate (the paper's momentum centre). Non-finite rows (any NaN or
    ±inf entry) are dropped and the iterations run on the n' finite rows (``1/n'`` in the
    step); the rule has no f, so only all n rows non-finite raises ``ValidationError`` (the
    policy in ``docs/kernels.md``). ``weights`` are validated and ignored. Runs on the Gram
    matrix: the data are read twice in all.

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([[0.0], [1.0], [2.0], [1000.0]])
    >>> round(centered_clipping(x, c_tau=1.0, M=50, init="median").item(), 3)
    1.5
    """
    rule = "centered_clipping"
    x = check_updates(updates, rule)
    n, d = x.shape
    check_weights(weights, n, rule)
    c_tau = check_nonneg_float(c_tau, "c_tau", rule)
    M = check_int(M, "M", rule, minimum=0)
    eps = check_nonneg_float(eps, "eps", rule, positive=True)
    if isinstance(init, Tensor):
        if init.shape != (d,) or not init.is_floating_point():
            raise ValidationError(
                f"{rule}: init must be 'mean', 'median', 'zero' or a floating tensor of shape "
                f"({d},); got a tensor of shape {tuple(init.shape)} and dtype {init.dtype}"
            )
        if not bool(torch.isfinite(init).all()):
            raise ValidationError(f"{rule}: init tensor must be finite")
    else:
        check_choice(init, "init", rule, INITS)
    start: str | Tensor = init
    work = drop_nonfinite(to_work_dtype(x), rule).x
    basis = median_centred_basis(work, start)
    alpha = initial_alpha(basis, start)
    rows = basis.n_rows
    for _ in range(M):
        dist = basis.sq_dist_to(alpha)[:rows].sqrt()
        scale = torch.clamp(c_tau / dist.clamp_min(eps), max=1.0) / rows
        alpha = alpha * (1.0 - scale.sum())
        alpha[: basis.n_rows] += scale
    return basis.materialize(alpha).to(x.dtype)
