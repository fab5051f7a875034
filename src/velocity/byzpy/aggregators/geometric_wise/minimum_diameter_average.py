"""ByzPy's ``MinimumDiameterAveraging`` on :func:`velocity.kernels.mda`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from velocity._validation import Integer, check_value
from velocity.byzpy._tensors import stack
from velocity.byzpy.aggregators.base import Aggregator
from velocity.errors import ValidationError
from velocity.kernels import mda

__all__ = ["MinimumDiameterAveraging"]


class MinimumDiameterAveraging(Aggregator):
    """Minimum diameter averaging (El Mhamdi et al. 2018): the mean of the ``n − f`` vectors
    whose largest pairwise distance is smallest, by exact search.

    Parameters
    ----------
    f : int
        Vectors left out, ``>= 0``; a call needs ``f < n``.
    chunk_size : int, default 256
        A scheduling hint kept for ByzPy compatibility (positive int).

    Examples
    --------
    >>> import torch
    >>> agg = MinimumDiameterAveraging(f=2)
    >>> agg.aggregate([torch.tensor([v]) for v in (0.0, 1.0, 2.0, 40.0, 41.0)]).tolist()
    [1.0]

    Notes
    -----
    Runs :func:`velocity.kernels.mda` with ``strict=False`` (ByzPy's ``f < n``) and no cap on
    the C(n, f) subsets searched (ByzPy has none). The first minimal subset in
    ``itertools.combinations`` order wins, as in ByzPy's search. Vectors holding NaN or ±inf
    are dropped and count against ``f`` (``docs/kernels.md``).
    """

    name: str = "minimum-diameter-averaging"

    def __init__(self, f: int, *, chunk_size: int = 256) -> None:
        owner = "MinimumDiameterAveraging"
        self.f: int = check_value(owner, "f", f, Integer(low=0))
        self.chunk_size: int = check_value(owner, "chunk_size", chunk_size, Integer(low=1))

    def aggregate(self, gradients: Sequence[Any]) -> Any:
        x, layout = stack(gradients, "gradients", "MinimumDiameterAveraging")
        n = x.shape[0]
        if self.f >= n:
            raise ValidationError(
                f"MinimumDiameterAveraging: f must satisfy 0 <= f < n; got f={self.f}, n={n}"
            )
        out = mda(x, f=self.f, max_subsets=math.comb(n, self.f), strict=False)
        return layout.restore(out)
