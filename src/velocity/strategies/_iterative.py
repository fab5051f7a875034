"""Iterative rules: refine one estimate until it settles (Weiszfeld, clipping, filtering)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from velocity import kernels
from velocity.strategies._base import Aggregator
from velocity.strategies._constraints import BYZANTINE, INIT, Integer, Real

if TYPE_CHECKING:
    from collections.abc import Mapping

    from torch import Tensor

    from velocity.strategies._constraints import Constraint, Init

__all__ = ["CAF", "CenteredClipping", "GeometricMedian"]


@dataclass(frozen=True)
class GeometricMedian(Aggregator):
    """Geometric median by smoothed Weiszfeld iterations (RFA), sample-weighted.

    Weiszfeld 1937; Pillutla et al. 2022, "Robust Aggregation for Federated Learning".
    Breakdown point 1/2 without knowing f. Rows holding NaN or ±inf are left out (reported
    in the metrics), as by every rule. Calls :func:`velocity.kernels.geometric_median`.

    Parameters
    ----------
    tol : float
        Stop when a step moves less than ``tol · max(‖z‖, 1)``, ``>= 0``.
    max_iter : int
        Most Weiszfeld iterations, ``>= 1``.
    eps : float
        Smoothing: distances below ``eps`` count as ``eps``, ``> 0``.
    init : {"median", "mean", "zero"}
        Starting point.
    """

    tol: float = 1e-6
    max_iter: int = 256
    eps: float = 1e-12
    init: Init = "median"

    _constraints: ClassVar[Mapping[str, Constraint]] = {
        "tol": Real(low=0),
        "max_iter": Integer(low=1),
        "eps": Real(low=0, low_open=True),
        "init": INIT,
    }

    def _reduce(self, updates: Tensor, weights: Tensor | None) -> Tensor:
        return kernels.geometric_median(
            updates, weights, tol=self.tol, max_iter=self.max_iter, eps=self.eps, init=self.init
        )


@dataclass(frozen=True)
class CenteredClipping(Aggregator):
    """Centered clipping: move an estimate by the mean of the clipped differences, M times.

    Karimireddy et al. 2021, "Learning from History for Byzantine Robust Optimization".
    Each update's pull on the estimate is clipped to radius ``c_tau``, so f clients move it
    by at most ``f · c_tau / n`` per iteration. Rows holding NaN or ±inf are left out
    (reported in the metrics), as by every rule. Calls
    :func:`velocity.kernels.centered_clipping`.

    Parameters
    ----------
    c_tau : float
        Clipping radius, ``>= 0``.
    M : int
        Iterations, ``>= 1``.
    eps : float
        Distances below ``eps`` count as ``eps``, ``> 0``.
    init : {"mean", "median", "zero"}
        Starting point.
    """

    c_tau: float
    M: int = 10
    eps: float = 1e-12
    init: Init = "mean"

    _constraints: ClassVar[Mapping[str, Constraint]] = {
        "c_tau": Real(low=0),
        "M": Integer(low=1),
        "eps": Real(low=0, low_open=True),
        "init": INIT,
    }

    def _reduce(self, updates: Tensor, weights: Tensor | None) -> Tensor:
        return kernels.centered_clipping(
            updates, weights, c_tau=self.c_tau, M=self.M, eps=self.eps, init=self.init
        )


@dataclass(frozen=True)
class CAF(Aggregator):
    """Covariance-bound agnostic filter: down-weight rows along the top covariance direction.

    Allouah, Guerraoui & Stephan 2025, "Towards Trustworthy Federated Learning with Untrusted
    Participants". Needs no bound on the honest covariance. Rows holding NaN or ±inf are left
    out and count against f (reported in the metrics), as by every rule with f. Calls
    :func:`velocity.kernels.caf`; needs ``n > 2f``.

    Parameters
    ----------
    f : int
        Number of Byzantine clients tolerated, ``>= 0``.
    """

    f: int

    _constraints: ClassVar[Mapping[str, Constraint]] = {"f": BYZANTINE}

    def _reduce(self, updates: Tensor, weights: Tensor | None) -> Tensor:
        return kernels.caf(updates, weights, f=self.f)
