"""Averaging rules: FedAvg and FedProx (server side of both is the weighted mean)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from velocity import kernels
from velocity.strategies._base import Aggregator
from velocity.strategies._constraints import NONFINITE, Real

if TYPE_CHECKING:
    from collections.abc import Mapping

    from torch import Tensor

    from velocity.strategies._constraints import Constraint, Nonfinite

__all__ = ["FedAvg", "FedProx"]


@dataclass(frozen=True)
class FedAvg(Aggregator):
    """Federated averaging: the sample-weighted mean of the updates.

    McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
    Decentralized Data". Calls :func:`velocity.kernels.mean`. Not robust: one client can move
    the mean arbitrarily far.

    Parameters
    ----------
    nonfinite : {"drop", "propagate", "raise"}
        What to do with rows holding NaN or ±inf. ``"drop"`` leaves them out and reports their
        indices in ``metrics["dropped_nonfinite"]`` (the policy every other rule follows);
        ``"propagate"`` keeps them; ``"raise"`` refuses them.
    """

    nonfinite: Nonfinite = "drop"

    _constraints: ClassVar[Mapping[str, Constraint]] = {
        "nonfinite": NONFINITE,
    }

    def _reduce(self, updates: Tensor, weights: Tensor | None) -> Tensor:
        return kernels.mean(updates, weights, nonfinite=self.nonfinite)


@dataclass(frozen=True)
class FedProx(Aggregator):
    """FedProx: FedAvg on the server, a proximal term on the clients.

    Li et al. 2020, "Federated Optimization in Heterogeneous Networks". Clients minimise
    ``loss + mu/2 · ‖w − w_global‖²``; the server takes the sample-weighted mean of the
    updates with :func:`velocity.kernels.mean` (``nonfinite="drop"``, dropped rows reported
    in the metrics). Not robust to Byzantine clients.

    Parameters
    ----------
    mu : float
        Strength of the clients' proximal term, ``>= 0`` (``0`` is FedAvg).
    """

    mu: float = 0.01

    _constraints: ClassVar[Mapping[str, Constraint]] = {"mu": Real(low=0)}

    def _reduce(self, updates: Tensor, weights: Tensor | None) -> Tensor:
        return kernels.mean(updates, weights, nonfinite="drop")
