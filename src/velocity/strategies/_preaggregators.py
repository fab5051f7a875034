"""Pre-aggregators: transform the stacked updates before the aggregator sees them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from velocity import kernels
from velocity.errors import ConfigurationError
from velocity.strategies._base import PreAggregator
from velocity.strategies._constraints import BYZANTINE, Integer, Real

if TYPE_CHECKING:
    from collections.abc import Mapping

    from torch import Generator, Tensor

    from velocity.strategies._constraints import Constraint

__all__ = ["ARC", "NNM", "Bucketing", "Clip"]


@dataclass(frozen=True)
class Bucketing(PreAggregator):
    """Bucketing: shuffle, then replace each bucket of ``bucket_size`` rows by its mean.

    Karimireddy et al. 2022, "Byzantine-Robust Learning on Heterogeneous Datasets via
    Bucketing". Reduces heterogeneity between honest rows so that robust rules keep their
    guarantees on non-IID data. Random: needs the caller's ``torch.Generator``. Calls
    :func:`velocity.kernels.bucketing`.

    Parameters
    ----------
    bucket_size : int
        Rows per bucket, ``>= 1`` (the last bucket may be smaller).
    """

    bucket_size: int

    _constraints: ClassVar[Mapping[str, Constraint]] = {"bucket_size": Integer(low=1)}
    _renumbers: ClassVar[bool] = True
    _mixes: ClassVar[bool] = True

    def apply(
        self, updates: Tensor, weights: Tensor | None = None, *, generator: Generator | None = None
    ) -> tuple[Tensor, Tensor | None]:
        if generator is None:
            raise ConfigurationError(
                f"{self!r} shuffles the updates and needs an explicit torch.Generator; "
                "pass generator= to aggregate() or apply()"
            )
        return kernels.bucketing(
            updates, weights, bucket_size=self.bucket_size, generator=generator
        )


@dataclass(frozen=True)
class Clip(PreAggregator):
    """Static norm clipping: scale every row to norm at most ``threshold``.

    Bounds what any single client can contribute (as in centered clipping and DP). Calls
    :func:`velocity.kernels.clip`.

    Parameters
    ----------
    threshold : float
        Largest allowed L2 norm, ``>= 0``.
    """

    threshold: float = 2.0

    _constraints: ClassVar[Mapping[str, Constraint]] = {"threshold": Real(low=0)}

    def apply(
        self, updates: Tensor, weights: Tensor | None = None, *, generator: Generator | None = None
    ) -> tuple[Tensor, Tensor | None]:
        return kernels.clip(updates, weights, threshold=self.threshold)


@dataclass(frozen=True)
class ARC(PreAggregator):
    """Adaptive robust clipping: clip the largest-norm rows to the norm of the next one.

    Allouah et al. 2024, "Boosting Robustness by Clipping Gradients in Distributed
    Learning". The ``⌊2f/n · (n − f)⌋`` largest rows are clipped, so no threshold is tuned.
    Calls :func:`velocity.kernels.arc`.

    Parameters
    ----------
    f : int
        Number of Byzantine clients tolerated, ``>= 0``.
    """

    f: int

    _constraints: ClassVar[Mapping[str, Constraint]] = {"f": BYZANTINE}

    def apply(
        self, updates: Tensor, weights: Tensor | None = None, *, generator: Generator | None = None
    ) -> tuple[Tensor, Tensor | None]:
        return kernels.arc(updates, weights, f=self.f)


@dataclass(frozen=True)
class NNM(PreAggregator):
    """Nearest-neighbour mixing: replace every row by the mean of its n − f nearest rows.

    Allouah et al. 2023, "Fixing by Mixing: A Recipe for Optimal Byzantine ML under
    Heterogeneity". Makes most robust rules near-optimal on non-IID data. Calls
    :func:`velocity.kernels.nnm`.

    Parameters
    ----------
    f : int
        Number of Byzantine clients tolerated, ``>= 0``.
    """

    f: int

    _constraints: ClassVar[Mapping[str, Constraint]] = {"f": BYZANTINE}
    _mixes: ClassVar[bool] = True

    def apply(
        self, updates: Tensor, weights: Tensor | None = None, *, generator: Generator | None = None
    ) -> tuple[Tensor, Tensor | None]:
        return kernels.nnm(updates, weights, f=self.f)
