"""Subset rules: the mean of n − f rows picked by diameter, spectrum, distance or norm."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from velocity import kernels
from velocity.strategies._base import Aggregator
from velocity.strategies._constraints import BYZANTINE, MAX_SUBSETS, Integer

if TYPE_CHECKING:
    from collections.abc import Mapping

    from torch import Tensor

    from velocity.strategies._constraints import Constraint

__all__ = ["CGE", "MDA", "SMEA", "MoNNA"]


@dataclass(frozen=True)
class MDA(Aggregator):
    """Minimum-diameter averaging: the mean of the n − f rows with the smallest diameter.

    El Mhamdi et al. 2018, "The Hidden Vulnerability of Distributed Learning in Byzantium"
    (after Rousseeuw 1985). Exact search over all (n − f)-subsets. Calls
    :func:`velocity.kernels.mda`; needs ``n > 2f``.

    Parameters
    ----------
    f : int
        Number of Byzantine clients tolerated, ``>= 0``.
    max_subsets : int
        Refuse (error) when C(n, f) exceeds this, ``>= 1``.
    """

    f: int
    max_subsets: int = 1_000_000

    _constraints: ClassVar[Mapping[str, Constraint]] = {
        "f": BYZANTINE,
        "max_subsets": MAX_SUBSETS,
    }

    def _reduce(self, updates: Tensor, weights: Tensor | None) -> Tensor:
        return kernels.mda(updates, weights, f=self.f, max_subsets=self.max_subsets)


@dataclass(frozen=True)
class SMEA(Aggregator):
    """Smallest maximum eigenvalue averaging: the n − f rows with the tightest covariance.

    Allouah, Guerraoui, Gupta, Pinot & Stephan 2023, "On the Privacy-Robustness-Utility
    Trilemma in Distributed Learning". Exact search over all (n − f)-subsets. Calls
    :func:`velocity.kernels.smea`; needs ``n > 2f``.

    Parameters
    ----------
    f : int
        Number of Byzantine clients tolerated, ``>= 0``.
    max_subsets : int
        Refuse (error) when C(n, f) exceeds this, ``>= 1``.
    """

    f: int
    max_subsets: int = 1_000_000

    _constraints: ClassVar[Mapping[str, Constraint]] = {
        "f": BYZANTINE,
        "max_subsets": MAX_SUBSETS,
    }

    def _reduce(self, updates: Tensor, weights: Tensor | None) -> Tensor:
        return kernels.smea(updates, weights, f=self.f, max_subsets=self.max_subsets)


@dataclass(frozen=True)
class MoNNA(Aggregator):
    """MoNNA: the mean of the n − f rows nearest to one trusted row (itself included).

    Farhadkhani et al. 2023, "Robust Collaborative Learning with Linear Gradient Overhead".
    Meant for peer-to-peer learning where each honest node trusts its own update. Calls
    :func:`velocity.kernels.monna`; needs ``n > 2f`` and a finite reference row.

    Parameters
    ----------
    f : int
        Number of Byzantine clients tolerated, ``>= 0``.
    reference_index : int
        Row of the trusted update, ``>= 0``.
    """

    f: int
    reference_index: int = 0

    _constraints: ClassVar[Mapping[str, Constraint]] = {
        "f": BYZANTINE,
        "reference_index": Integer(low=0),
    }

    def _reduce(self, updates: Tensor, weights: Tensor | None) -> Tensor:
        return kernels.monna(updates, weights, f=self.f, reference_index=self.reference_index)


@dataclass(frozen=True)
class CGE(Aggregator):
    """Comparative gradient elimination: the mean of the n − f rows of smallest L2 norm.

    Gupta & Vaidya 2020, "Fault-Tolerance in Distributed Optimization: The Case of
    Redundancy". Cheap (norms only); guards against large-norm attacks, not against small
    well-aimed ones. Calls :func:`velocity.kernels.cge`; needs ``n > f``.

    Parameters
    ----------
    f : int
        Number of Byzantine clients tolerated, ``>= 0``.
    """

    f: int

    _constraints: ClassVar[Mapping[str, Constraint]] = {"f": BYZANTINE}

    def _reduce(self, updates: Tensor, weights: Tensor | None) -> Tensor:
        return kernels.cge(updates, weights, f=self.f)
