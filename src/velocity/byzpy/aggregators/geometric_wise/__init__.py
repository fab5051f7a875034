"""Distance-based aggregators: Krum, Multi-Krum, geometric median, MDA, MoNNA, SMEA."""

from velocity.byzpy.aggregators.geometric_wise.geometric_median import GeometricMedian
from velocity.byzpy.aggregators.geometric_wise.krum import Krum, MultiKrum
from velocity.byzpy.aggregators.geometric_wise.minimum_diameter_average import (
    MinimumDiameterAveraging,
)
from velocity.byzpy.aggregators.geometric_wise.monna import MoNNA
from velocity.byzpy.aggregators.geometric_wise.smea import SMEA

__all__ = ["SMEA", "GeometricMedian", "Krum", "MinimumDiameterAveraging", "MoNNA", "MultiKrum"]
