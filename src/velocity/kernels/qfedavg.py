"""q-FedAvg: the fair-resource-allocation step of q-FFL."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from velocity.errors import ConfigurationError, ValidationError
from velocity.kernels._checks import (
    check_nonneg_float,
    check_updates,
    check_weights,
    drop_nonfinite,
    to_work_dtype,
)

__all__ = ["qfedavg"]


def _check_losses(losses: object, n: int) -> Tensor:
    """``losses`` as a float64 ``(n,)`` tensor of finite values >= 0, or a ValidationError."""
    if not isinstance(losses, Tensor):
        raise ValidationError(
            f"qfedavg: losses must be a torch.Tensor of shape ({n},) (one loss per update "
            f"row); got {type(losses).__name__}"
        )
    if losses.shape != (n,):
        raise ValidationError(
            f"qfedavg: losses must have shape ({n},) to match {n} update rows; "
            f"got {tuple(losses.shape)}"
        )
    if losses.dtype == torch.bool or losses.is_complex():
        raise ValidationError(f"qfedavg: losses must be real numbers; got dtype {losses.dtype}")
    out = losses.detach().to(torch.float64)
    bad = torch.nonzero(~torch.isfinite(out)).flatten().tolist()
    if bad:
        raise ValidationError(f"qfedavg: losses must be finite; rows {bad} are NaN or ±inf")
    negative = torch.nonzero(out < 0).flatten().tolist()
    if negative:
        raise ValidationError(f"qfedavg: losses must be >= 0; rows {negative} are negative")
    return out


def qfedavg(
    updates: Tensor,
    losses: Tensor,
    weights: Tensor | None = None,
    *,
    q: float,
    lipschitz: float | None,
) -> Tensor:
    r"""q-FedAvg (Li, Sanjabi, Beirami & Smith 2020, "Fair Resource Allocation in Federated
    Learning", ICLR; Algorithm 2).

    q-FFL minimises :math:`\sum_k \frac{p_k}{q+1} F_k^{q+1}(w)`, which gives the clients with
    a high loss more say as q grows. With :math:`L` the Lipschitz constant of the local
    gradients (the paper takes :math:`L = 1/\eta`, η the clients' learning rate), client k's
    local training turns the global model :math:`w^t` into :math:`w_k`, and

    .. math::

        \Delta w_k = L (w^t - w_k), \quad
        \Delta'_k = F_k^q \, \Delta w_k, \quad
        h_k = q F_k^{q-1} \lVert \Delta w_k \rVert^2 + L F_k^q, \quad
        w^{t+1} = w^t - \frac{\sum_k \Delta'_k}{\sum_k h_k}.

    The rows here are the clients' updates :math:`\Delta_k = w_k - w^t`, so the step returned
    is

    .. math::

        \Delta = \frac{\sum_k F_k^q \, \Delta_k}
                      {\sum_k \left(q F_k^{q-1} L \lVert \Delta_k \rVert^2 + F_k^q\right)},

    with :math:`F_k` client k's loss of the *received* model :math:`w^t` on its local
    training data (measured before it trains). q = 0 is the unweighted mean of the rows (the
    paper's FedAvg, whose client sampling carries the weights :math:`p_k`); so ``weights``
    are validated and ignored, as in the paper each sampled client is one term. The
    coefficients are computed in float64 with the losses scaled by their maximum (both sums
    are homogeneous of degree q in F, so the result is the same and :math:`F^q` cannot
    overflow); the weighted sum runs in the data's dtype, as :func:`mean`'s does.

    Parameters
    ----------
    updates : Tensor, shape (n, d)
        The clients' updates :math:`\Delta_k`.
    losses : Tensor, shape (n,)
        :math:`F_k`, finite and >= 0 (> 0 when 0 < q < 1, where :math:`F^{q-1}` is infinite
        at 0).
    weights : Tensor, shape (n,), optional
        Validated and ignored.
    q : float
        Fairness parameter, finite and >= 0.
    lipschitz : float
        :math:`L`, finite and > 0; the paper's choice is ``1 / lr`` of the clients' SGD.
        ``None`` (the strategy's "use 1/lr", to be filled in by whoever knows the clients'
        learning rate) is refused.

    Returns
    -------
    Tensor, shape (d,)

    Raises
    ------
    ValidationError
        Bad shapes or dtypes, a negative or non-finite loss or q, a zero loss with
        0 < q < 1, a denominator of 0 (every loss 0 with q > 1), or every row non-finite.
    ConfigurationError
        ``lipschitz`` is ``None`` or not a finite number > 0.

    Notes
    -----
    Non-finite rows follow the policy of every rule (``docs/kernels.md``): the k rows
    holding NaN or ±inf are left out with their losses, and the result is q-FedAvg of the
    n − k finite rows; only all n rows non-finite raises (the rule has no Byzantine budget;
    it is not robust, and a finite row of any size moves the step).

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> qfedavg(x, torch.tensor([1.0, 4.0]), q=0.0, lipschitz=10.0).tolist()
    [0.5, 0.5]
    >>> [round(v, 4) for v in qfedavg(x, torch.tensor([1.0, 4.0]), q=1.0, lipschitz=1.0).tolist()]
    [0.1429, 0.5714]
    """
    x = check_updates(updates, "qfedavg")
    n = x.shape[0]
    check_weights(weights, n, "qfedavg")
    f_all = _check_losses(losses, n)
    q = check_nonneg_float(q, "q", "qfedavg")
    if lipschitz is None:
        raise ConfigurationError(
            "qfedavg: lipschitz is None; it must be the Lipschitz constant L of the clients' "
            "gradients, the paper's 1/lr of their SGD. QFedAvg(lipschitz=None) means 'use "
            "1/lr': whoever builds the engine must fill it in (resolve_lipschitz(strategy, "
            "lr)) before aggregating"
        )
    if isinstance(lipschitz, bool) or not isinstance(lipschitz, numbers.Real):
        raise ConfigurationError(
            f"qfedavg: lipschitz must be a finite number > 0; got {lipschitz!r}"
        )
    lip = float(lipschitz)
    if not (math.isfinite(lip) and lip > 0):
        raise ConfigurationError(f"qfedavg: lipschitz must be a finite number > 0; got {lip}")
    if 0.0 < q < 1.0:
        zero = torch.nonzero(f_all == 0).flatten().tolist()
        if zero:
            raise ValidationError(
                f"qfedavg: with 0 < q < 1 every loss must be > 0 (F^(q-1) is infinite at 0); "
                f"got q={q} and rows {zero} with loss 0"
            )
    work = to_work_dtype(x)
    norms = torch.linalg.vector_norm(work, dim=1)
    kept = drop_nonfinite(work, "qfedavg", hint=norms)
    if kept.keep is not None:
        work = kept.x
        norms = torch.linalg.vector_norm(work, dim=1)
    loss = kept.take(f_all)
    assert loss is not None
    if q == 0.0:
        numer = torch.ones_like(loss)
        denom = float(loss.numel())
    else:
        peak = float(loss.max())
        r = loss / peak if peak > 0 else loss
        scale = peak if peak > 0 else 1.0
        sq = norms.to(device=r.device, dtype=torch.float64) ** 2
        numer = r**q
        h = q * r ** (q - 1.0) * (lip / scale) * sq + numer
        denom = float(h.sum())
        if denom == 0.0:
            raise ValidationError(
                f"qfedavg: the denominator Σ_k (q F_k^(q-1) L ‖Δ_k‖² + F_k^q) is 0 (every "
                f"loss is 0 with q={q}): the step is undefined"
            )
    coef = (numer / denom).to(device=work.device, dtype=work.dtype)
    return (coef @ work).to(x.dtype)
