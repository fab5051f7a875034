"""Norm-based aggregators: centered clipping, CGE, CAF."""

from velocity.byzpy.aggregators.norm_wise.caf import CAF
from velocity.byzpy.aggregators.norm_wise.center_clipping import CenteredClipping
from velocity.byzpy.aggregators.norm_wise.comparative_gradient_elimination import (
    ComparativeGradientElimination,
)

__all__ = ["CAF", "CenteredClipping", "ComparativeGradientElimination"]
