"""ByzPy's aggregators on :mod:`velocity.kernels` (``Aggregator`` and three families)."""

from velocity.byzpy.aggregators.base import Aggregator

__all__ = ["Aggregator"]
