"""ByzPy's ``Bucketing`` on :func:`velocity.kernels.bucketing`."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

from velocity._validation import Integer, check_value
from velocity.byzpy._tensors import stack
from velocity.byzpy.pre_aggregators.base import PreAggregator
from velocity.errors import ConfigurationError, ValidationError
from velocity.kernels import bucketing

__all__ = ["Bucketing"]


class Bucketing(PreAggregator):
    """Bucketing (Karimireddy, He & Jaggi 2022): shuffle the vectors, cut them into
    consecutive buckets of ``bucket_size`` and return each bucket's mean.

    ``n`` vectors give ``⌈n / bucket_size⌉`` (the last bucket may be smaller).

    Parameters
    ----------
    bucket_size : int
        Vectors per bucket, ``>= 1``.
    feature_chunk_size : int, default 8192
        A scheduling hint kept for ByzPy compatibility (positive int).
    perm : iterable of int, optional
        A fixed order of the vectors (a permutation of ``range(n)``, checked at each call)
        instead of a shuffle.
    rng : random.Random, optional
        The shuffle's generator (``rng.shuffle(list(range(n)))``, as ByzPy draws it, so one
        seed gives ByzPy's buckets); a fresh ``random.Random()`` when ``None``.

    Examples
    --------
    >>> import random, torch
    >>> agg = Bucketing(bucket_size=4, rng=random.Random(0))
    >>> out = agg.pre_aggregate([torch.randn(100) for _ in range(10)])
    >>> len(out), out[0].shape
    (3, torch.Size([100]))

    Notes
    -----
    The order is drawn here and handed to :func:`velocity.kernels.bucketing` as its ``perm``.
    Vectors holding NaN or ±inf are left out of that order (``docs/kernels.md``), so fewer
    buckets may come back.
    """

    name: str = "pre-agg/bucketing"

    def __init__(
        self,
        bucket_size: int,
        *,
        feature_chunk_size: int = 8192,
        perm: Iterable[int] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        owner = "Bucketing"
        self.bucket_size: int = check_value(owner, "bucket_size", bucket_size, Integer(low=1))
        self.feature_chunk_size: int = check_value(
            owner, "feature_chunk_size", feature_chunk_size, Integer(low=1)
        )
        self.perm: list[int] | None = None
        if perm is not None:
            self.perm = [check_value(owner, "perm[i]", i, Integer(low=0)) for i in perm]
        if rng is not None and not isinstance(rng, random.Random):
            raise ConfigurationError(
                f"Bucketing.rng must be a random.Random or None; got {type(rng).__name__}"
            )
        self.rng: random.Random = rng if rng is not None else random.Random()

    def _order(self, n: int) -> list[int]:
        if self.perm is None:
            order = list(range(n))
            self.rng.shuffle(order)
            return order
        if len(self.perm) != n or sorted(self.perm) != list(range(n)):
            raise ValidationError(
                f"Bucketing: perm must be a permutation of range(n) = range({n}); got {self.perm}"
            )
        return list(self.perm)

    def pre_aggregate(self, xs: Sequence[Any]) -> list[Any]:
        x, layout = stack(xs, "xs", "Bucketing")
        out, _ = bucketing(x, bucket_size=self.bucket_size, perm=self._order(x.shape[0]))
        return layout.restore_rows(out)
