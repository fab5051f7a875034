"""ByzPy's pre-aggregators on :mod:`velocity.kernels`: bucketing, clipping, ARC, NNM."""

from velocity.byzpy.pre_aggregators.arc import ARC
from velocity.byzpy.pre_aggregators.base import PreAggregator
from velocity.byzpy.pre_aggregators.bucketing import Bucketing
from velocity.byzpy.pre_aggregators.clipping import Clipping
from velocity.byzpy.pre_aggregators.nnm import NearestNeighborMixing

__all__ = ["ARC", "Bucketing", "Clipping", "NearestNeighborMixing", "PreAggregator"]
