"""Server optimizers: turn the aggregated update into a step on the global parameters.

Reddi et al. 2021, "Adaptive Federated Optimization". Every ``step`` takes the aggregated
update ``delta`` (new − old, so it points downhill) and the optimizer's ``state`` (``None``
on the first round) and returns ``(new_params, new_state)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final, TypeAlias

from velocity import kernels
from velocity.strategies._base import ServerOptimizer
from velocity.strategies._constraints import Boolean, Real

if TYPE_CHECKING:
    from collections.abc import Mapping

    from torch import Tensor

    from velocity.strategies._constraints import Constraint

__all__ = ["DiLoCo", "FedAdagrad", "FedAdam", "FedAvgM", "FedYogi", "ServerSGD"]

_LR: Final = Real(low=0, low_open=True)
_DECAY: Final = Real(low=0, high=1, high_open=True)
_TAU: Final = Real(low=0, low_open=True)

_State: TypeAlias = "dict[str, Tensor]"
_StateIn: TypeAlias = "Mapping[str, Tensor] | None"


@dataclass(frozen=True)
class ServerSGD(ServerOptimizer):
    """Plain server step ``x ← x + lr · Δ`` (``lr = 1`` is FedAvg).

    Calls :func:`velocity.kernels.server_sgd`.

    Parameters
    ----------
    lr : float
        Server learning rate, ``> 0``.
    """

    lr: float = 1.0

    _constraints: ClassVar[Mapping[str, Constraint]] = {"lr": _LR}

    def step(self, params: Tensor, delta: Tensor, state: _StateIn) -> tuple[Tensor, _State]:
        return kernels.server_sgd(params, delta, state, lr=self.lr)


@dataclass(frozen=True)
class FedAvgM(ServerOptimizer):
    """Server momentum ``m ← β m + Δ; x ← x + lr · m``.

    Hsu et al. 2019, "Measuring the Effects of Non-Identical Data Distribution for Federated
    Visual Classification". Calls :func:`velocity.kernels.fedavgm`.

    Parameters
    ----------
    lr : float
        Server learning rate, ``> 0``.
    momentum : float
        β, in ``[0, 1)``.
    """

    lr: float = 1.0
    momentum: float = 0.9

    _constraints: ClassVar[Mapping[str, Constraint]] = {"lr": _LR, "momentum": _DECAY}

    def step(self, params: Tensor, delta: Tensor, state: _StateIn) -> tuple[Tensor, _State]:
        return kernels.fedavgm(params, delta, state, lr=self.lr, momentum=self.momentum)


@dataclass(frozen=True)
class DiLoCo(ServerOptimizer):
    """DiLoCo's outer step: SGD with Nesterov momentum on the pseudo-gradient ``−Δ``.

    Douillard et al. 2023, "DiLoCo: Distributed Low-Communication Training of Language
    Models" (Algorithm 1): every round each worker takes ``H`` inner steps (AdamW, see
    ``TrainConfig(optimizer="adamw")``) from the global model, the server averages their
    deltas and treats the negated mean as a gradient for an outer Nesterov step. With the
    mean delta ``Δ`` (new − old) and ``m`` the negated SGD buffer::

        m ← β m + Δ
        x ← x + lr · (Δ + β m)      (nesterov=True; the paper's outer optimizer)
        x ← x + lr · m              (nesterov=False: heavy ball, exactly FedAvgM)

    which is :class:`torch.optim.SGD` ``(lr, momentum=β, nesterov=...)`` applied with
    ``grad = −Δ``. The state is ``{"m": m}``, checkpointed with the engine like FedAvgM's.
    Calls :func:`velocity.kernels.fedavgm` (``nesterov=`` keyword). Use it after a mean:
    ``Pipeline(FedAvg(), DiLoCo())``, YAML ``strategy: [FedAvg, DiLoCo]``.

    Parameters
    ----------
    lr : float
        Outer learning rate, ``> 0`` (the paper's 0.7).
    momentum : float
        β, in ``[0, 1)`` (the paper's 0.9).
    nesterov : bool
        Nesterov momentum (the paper's choice); ``False`` gives heavy-ball momentum.

    Examples
    --------
    >>> import torch
    >>> params, state = DiLoCo(lr=0.5, momentum=0.5).step(torch.zeros(2), torch.ones(2), None)
    >>> params.tolist(), state["m"].tolist()  # 0.5 · (1 + 0.5 · 1)
    ([0.75, 0.75], [1.0, 1.0])
    """

    lr: float = 0.7
    momentum: float = 0.9
    nesterov: bool = True

    _constraints: ClassVar[Mapping[str, Constraint]] = {
        "lr": _LR,
        "momentum": _DECAY,
        "nesterov": Boolean(),
    }

    def step(self, params: Tensor, delta: Tensor, state: _StateIn) -> tuple[Tensor, _State]:
        return kernels.fedavgm(
            params, delta, state, lr=self.lr, momentum=self.momentum, nesterov=self.nesterov
        )


@dataclass(frozen=True)
class FedAdagrad(ServerOptimizer):
    """Adagrad on the server: ``v ← v + Δ²; x ← x + lr · Δ / (√v + τ)``.

    Reddi et al. 2021, "Adaptive Federated Optimization". Calls
    :func:`velocity.kernels.fedadagrad`.

    Parameters
    ----------
    lr : float
        Server learning rate, ``> 0``.
    tau : float
        Adaptivity floor τ, ``> 0``.
    """

    lr: float = 0.1
    tau: float = 1e-3

    _constraints: ClassVar[Mapping[str, Constraint]] = {"lr": _LR, "tau": _TAU}

    def step(self, params: Tensor, delta: Tensor, state: _StateIn) -> tuple[Tensor, _State]:
        return kernels.fedadagrad(params, delta, state, lr=self.lr, tau=self.tau)


@dataclass(frozen=True)
class FedAdam(ServerOptimizer):
    """Adam on the server (no bias correction), Reddi et al. 2021.

    ``m ← β₁m + (1−β₁)Δ; v ← β₂v + (1−β₂)Δ²; x ← x + lr · m / (√v + τ)``. Calls
    :func:`velocity.kernels.fedadam`.

    Parameters
    ----------
    lr : float
        Server learning rate, ``> 0``.
    beta1, beta2 : float
        Decay rates, in ``[0, 1)``.
    tau : float
        Adaptivity floor τ, ``> 0``.
    """

    lr: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    _constraints: ClassVar[Mapping[str, Constraint]] = {
        "lr": _LR,
        "beta1": _DECAY,
        "beta2": _DECAY,
        "tau": _TAU,
    }

    def step(self, params: Tensor, delta: Tensor, state: _StateIn) -> tuple[Tensor, _State]:
        return kernels.fedadam(
            params, delta, state, lr=self.lr, beta1=self.beta1, beta2=self.beta2, tau=self.tau
        )


@dataclass(frozen=True)
class FedYogi(ServerOptimizer):
    """Yogi on the server, Reddi et al. 2021: FedAdam with ``v ← v − (1−β₂)Δ² sign(v − Δ²)``.

    The additive second-moment update grows v more slowly than Adam's, which helps when
    updates are sparse or heterogeneous. Calls :func:`velocity.kernels.fedyogi`.

    Parameters
    ----------
    lr : float
        Server learning rate, ``> 0``.
    beta1, beta2 : float
        Decay rates, in ``[0, 1)``.
    tau : float
        Adaptivity floor τ, ``> 0``.
    """

    lr: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    _constraints: ClassVar[Mapping[str, Constraint]] = {
        "lr": _LR,
        "beta1": _DECAY,
        "beta2": _DECAY,
        "tau": _TAU,
    }

    def step(self, params: Tensor, delta: Tensor, state: _StateIn) -> tuple[Tensor, _State]:
        return kernels.fedyogi(
            params, delta, state, lr=self.lr, beta1=self.beta1, beta2=self.beta2, tau=self.tau
        )
