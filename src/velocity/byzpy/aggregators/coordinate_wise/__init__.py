"""Coordinate-wise aggregators: median, trimmed mean, mean around the median."""

from velocity.byzpy.aggregators.coordinate_wise.mean_of_medians import MeanOfMedians
from velocity.byzpy.aggregators.coordinate_wise.median import CoordinateWiseMedian
from velocity.byzpy.aggregators.coordinate_wise.trimmed_mean import CoordinateWiseTrimmedMean

__all__ = ["CoordinateWiseMedian", "CoordinateWiseTrimmedMean", "MeanOfMedians"]
