"""Krum family: score each row by the squared distances to its nearest neighbours."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from velocity import kernels
from velocity.strategies._base import Aggregator
from velocity.strategies._constraints import BYZANTINE, NEIGHBORS, Integer, NoneOr

if TYPE_CHECKING:
    from collections.abc import Mapping

    from torch import Tensor

    from velocity.strategies._constraints import Constraint, Neighbors

__all__ = ["Bulyan", "Krum", "MultiKrum"]


@dataclass(frozen=True)
class Krum(Aggregator):
    """Krum: the single update whose nearest neighbours are closest to it.

    Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine Tolerant Gradient
    Descent". A row's score is the sum of squared distances to its k nearest other rows; the
    row with the smallest score is returned. Calls :func:`velocity.kernels.krum`; needs
    ``n > 2f + 2``.

    Parameters
    ----------
    f : int
        Number of Byzantine clients tolerated, ``>= 0``.
    neighbors : {"n-f-2", "n-f-1"}
        k: the paper's ``n - f - 2`` (default) or ``n - f - 1`` as in ByzFL and ByzPy.
    """

    f: int
    neighbors: Neighbors = "n-f-2"

    _constraints: ClassVar[Mapping[str, Constraint]] = {"f": BYZANTINE, "neighbors": NEIGHBORS}

    def _reduce(self, updates: Tensor, weights: Tensor | None) -> Tensor:
        return kernels.krum(updates, weights, f=self.f, neighbors=self.neighbors)


@dataclass(frozen=True)
class MultiKrum(Aggregator):
    """Multi-Krum: the mean of the m updates with the smallest Krum scores.

    Blanchard et al. 2017 (as :class:`Krum`). Calls :func:`velocity.kernels.multi_krum`;
    needs ``n > 2f + 2`` and ``m <= n``.

    Parameters
    ----------
    f : int
        Number of Byzantine clients tolerated, ``>= 0``.
    m : int or None
        Rows averaged, ``>= 1``; ``None`` means ``n - f``.
    neighbors : {"n-f-2", "n-f-1"}
        Krum's neighbourhood size (see :class:`Krum`).
    """

    f: int
    m: int | None = None
    neighbors: Neighbors = "n-f-2"

    _constraints: ClassVar[Mapping[str, Constraint]] = {
        "f": BYZANTINE,
        "m": NoneOr(Integer(low=1)),
        "neighbors": NEIGHBORS,
    }

    def _reduce(self, updates: Tensor, weights: Tensor | None) -> Tensor:
        return kernels.multi_krum(updates, weights, f=self.f, m=self.m, neighbors=self.neighbors)


@dataclass(frozen=True)
class Bulyan(Aggregator):
    """Bulyan: Krum selection of n − 2f rows, then a coordinate-wise trimmed mean around the median.

    El Mhamdi et al. 2018, "The Hidden Vulnerability of Distributed Learning in Byzantium".
    Guards against attacks that hide in a few coordinates, which Krum alone lets through.
    Calls :func:`velocity.kernels.bulyan`; needs ``n >= 4f + 3``.

    Parameters
    ----------
    f : int
        Number of Byzantine clients tolerated, ``>= 0``.
    neighbors : {"n-f-2", "n-f-1"}
        Krum's neighbourhood size (see :class:`Krum`).
    """

    f: int
    neighbors: Neighbors = "n-f-2"

    _constraints: ClassVar[Mapping[str, Constraint]] = {"f": BYZANTINE, "neighbors": NEIGHBORS}

    def _reduce(self, updates: Tensor, weights: Tensor | None) -> Tensor:
        return kernels.bulyan(updates, weights, f=self.f, neighbors=self.neighbors)
