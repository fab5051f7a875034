"""Coordinate-wise rules: each coordinate is aggregated on its own n values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from velocity import kernels
from velocity.errors import ValidationError
from velocity.strategies._base import Aggregator
from velocity.strategies._constraints import BYZANTINE

if TYPE_CHECKING:
    from collections.abc import Mapping

    from torch import Tensor

    from velocity.strategies._constraints import Constraint

__all__ = ["FedMedian", "MeaMed", "TrimmedMean"]


@dataclass(frozen=True)
class FedMedian(Aggregator):
    """Coordinate-wise median (even n: mean of the two middle values).

    Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal Statistical
    Rates". Calls :func:`velocity.kernels.median`. Tolerates any minority of outliers per
    coordinate; no setting.
    """

    def _reduce(self, updates: Tensor, weights: Tensor | None) -> Tensor:
        return kernels.median(updates, weights)


@dataclass(frozen=True)
class TrimmedMean(Aggregator):
    """Coordinate-wise trimmed mean: drop the k smallest and k largest values, average the rest.

    Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal Statistical
    Rates". Calls :func:`velocity.kernels.trimmed_mean` with ``f=k``; needs ``n > 2k``.

    Parameters
    ----------
    k : int
        Values trimmed from each end of every coordinate, ``>= 0``; at least the number of
        Byzantine clients.
    """

    k: int

    _constraints: ClassVar[Mapping[str, Constraint]] = {"k": BYZANTINE}

    def _reduce(self, updates: Tensor, weights: Tensor | None) -> Tensor:
        n = int(updates.shape[0]) if updates.ndim == 2 else 0
        if updates.ndim == 2 and not n > 2 * self.k:
            raise ValidationError(f"TrimmedMean needs n > 2k; got n={n}, k={self.k}")
        return kernels.trimmed_mean(updates, weights, f=self.k)


@dataclass(frozen=True)
class MeaMed(Aggregator):
    """Mean around the median: per coordinate, average the n − f values closest to the median.

    Xie et al. 2018, "Generalized Byzantine-tolerant SGD". Calls
    :func:`velocity.kernels.meamed`; needs ``n > 2f``.

    Parameters
    ----------
    f : int
        Number of Byzantine clients tolerated, ``>= 0``.
    """

    f: int

    _constraints: ClassVar[Mapping[str, Constraint]] = {"f": BYZANTINE}

    def _reduce(self, updates: Tensor, weights: Tensor | None) -> Tensor:
        return kernels.meamed(updates, weights, f=self.f)
