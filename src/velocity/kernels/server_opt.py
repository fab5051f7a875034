"""Server optimizers applied to the aggregated update (Reddi et al. 2021).

Each is a pure step ``(params, delta, state, **hp) -> (new_params, new_state)``: ``delta`` is
the aggregated client update (new − old, so it points downhill, the negative of a
pseudo-gradient), ``state`` is ``None`` on the first round. Inputs are never modified.
Reference: Reddi et al. 2021, "Adaptive Federated Optimization" (Algorithm 2); FedAvgM from
Hsu, Qi & Brown 2019.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from velocity.errors import ValidationError
from velocity.kernels._checks import check_nonneg_float

__all__ = ["fedadagrad", "fedadam", "fedavgm", "fedyogi", "server_sgd"]

State = Mapping[str, Tensor] | None


def _check(params: Tensor, delta: Tensor, rule: str) -> None:
    for name, t in (("params", params), ("delta", delta)):
        if not isinstance(t, Tensor) or t.ndim != 1 or not t.is_floating_point():
            raise ValidationError(f"{rule}: {name} must be a 1-D floating tensor")
    if params.shape != delta.shape:
        raise ValidationError(
            f"{rule}: params and delta must have the same shape; got {tuple(params.shape)} "
            f"and {tuple(delta.shape)}"
        )


def _beta(value: float, name: str, rule: str) -> float:
    b = check_nonneg_float(value, name, rule)
    if b >= 1.0:
        raise ValidationError(f"{rule}: {name} must be in [0, 1); got {value!r}")
    return b


def _slot(state: State, key: str, like: Tensor, fill: float, rule: str) -> Tensor:
    if state is None or key not in state:
        return torch.full_like(like, fill)
    slot = state[key]
    if slot.shape != like.shape:
        raise ValidationError(
            f"{rule}: state[{key!r}] has shape {tuple(slot.shape)}, expected {tuple(like.shape)}"
        )
    return slot


def server_sgd(
    params: Tensor, delta: Tensor, state: State = None, *, lr: float = 1.0
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""Plain server step :math:`x \leftarrow x + \eta\Delta` (FedAvg when η = 1).

    >>> import torch
    >>> server_sgd(torch.zeros(2), torch.ones(2), lr=0.5)[0].tolist()
    [0.5, 0.5]
    """
    _check(params, delta, "server_sgd")
    lr = check_nonneg_float(lr, "lr", "server_sgd")
    return params + lr * delta, {}


def fedavgm(
    params: Tensor,
    delta: Tensor,
    state: State = None,
    *,
    lr: float = 1.0,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""FedAvgM: :math:`m \leftarrow \beta m + \Delta;\ x \leftarrow x + \eta m`.

    With ``nesterov=True`` the step looks ahead along the new momentum,
    :math:`x \leftarrow x + \eta(\Delta + \beta m)`: :class:`torch.optim.SGD` with
    ``nesterov=True`` (and ``dampening=0``) on the pseudo-gradient :math:`-\Delta`, whose
    buffer is :math:`-m` (DiLoCo's outer step, Douillard et al. 2023).

    >>> import torch
    >>> fedavgm(torch.zeros(1), torch.ones(1), momentum=0.5, nesterov=True)[0].tolist()
    [1.5]
    """
    _check(params, delta, "fedavgm")
    lr = check_nonneg_float(lr, "lr", "fedavgm")
    beta = _beta(momentum, "momentum", "fedavgm")
    if not isinstance(nesterov, bool):
        raise ValidationError(f"fedavgm: nesterov must be True or False; got {nesterov!r}")
    m = beta * _slot(state, "m", delta, 0.0, "fedavgm") + delta
    step = delta + beta * m if nesterov else m
    return params + lr * step, {"m": m}


def fedadagrad(
    params: Tensor,
    delta: Tensor,
    state: State = None,
    *,
    lr: float = 0.1,
    tau: float = 1e-3,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""FedAdagrad: :math:`v \leftarrow v + \Delta^2;\ x \leftarrow x + \eta\Delta/(\sqrt v +
    \tau)`, v starting at τ²."""
    _check(params, delta, "fedadagrad")
    lr = check_nonneg_float(lr, "lr", "fedadagrad")
    tau = check_nonneg_float(tau, "tau", "fedadagrad", positive=True)
    v = _slot(state, "v", delta, tau * tau, "fedadagrad") + delta * delta
    return params + lr * delta / (v.sqrt() + tau), {"v": v}


def _adaptive(
    rule: str,
    params: Tensor,
    delta: Tensor,
    state: State,
    lr: float,
    beta1: float,
    beta2: float,
    tau: float,
    yogi: bool,
) -> tuple[Tensor, dict[str, Tensor]]:
    _check(params, delta, rule)
    lr = check_nonneg_float(lr, "lr", rule)
    b1 = _beta(beta1, "beta1", rule)
    b2 = _beta(beta2, "beta2", rule)
    tau = check_nonneg_float(tau, "tau", rule, positive=True)
    m = b1 * _slot(state, "m", delta, 0.0, rule) + (1.0 - b1) * delta
    v_old = _slot(state, "v", delta, tau * tau, rule)
    sq = delta * delta
    v = v_old - (1.0 - b2) * sq * torch.sign(v_old - sq) if yogi else b2 * v_old + (1.0 - b2) * sq
    return params + lr * m / (v.sqrt() + tau), {"m": m, "v": v}


def fedadam(
    params: Tensor,
    delta: Tensor,
    state: State = None,
    *,
    lr: float = 0.1,
    beta1: float = 0.9,
    beta2: float = 0.99,
    tau: float = 1e-3,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""FedAdam: :math:`m \leftarrow \beta_1 m + (1-\beta_1)\Delta;\ v \leftarrow \beta_2 v +
    (1-\beta_2)\Delta^2;\ x \leftarrow x + \eta\, m/(\sqrt v + \tau)`, v starting at τ²."""
    return _adaptive("fedadam", params, delta, state, lr, beta1, beta2, tau, yogi=False)


def fedyogi(
    params: Tensor,
    delta: Tensor,
    state: State = None,
    *,
    lr: float = 0.1,
    beta1: float = 0.9,
    beta2: float = 0.99,
    tau: float = 1e-3,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""FedYogi: as FedAdam with :math:`v \leftarrow v - (1-\beta_2)\Delta^2
    \operatorname{sign}(v - \Delta^2)`."""
    return _adaptive("fedyogi", params, delta, state, lr, beta1, beta2, tau, yogi=True)
