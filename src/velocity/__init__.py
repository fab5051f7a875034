"""VelocityFL: fast, robust, reproducible federated learning.

The public surface: strategies (frozen dataclasses, :func:`parse_strategy`), the parameter
plumbing (:class:`ParamSpec`, :class:`ClientUpdate`, :class:`RoundSummary`), the error
hierarchy, and the :mod:`velocity.kernels` module of aggregation kernels.
"""

from __future__ import annotations

import os as _os

# Large CPU tensors (a round's (n, d) update stack is hundreds of MB) are otherwise backed by
# 4 KiB pages: first-touch page faults then cost more than the aggregation itself. PyTorch's
# CPU allocator asks for transparent huge pages when this is set; it is read once, at the
# first large allocation. Set THP_MEM_ALLOC_ENABLE=0 before importing velocity to opt out.
_os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from velocity import kernels
from velocity.errors import (
    ConfigurationError,
    ProtocolError,
    SecurityError,
    ValidationError,
    VelocityError,
)
from velocity.server import VelocityServer
from velocity.strategies import (
    ALL_STRATEGIES,
    ARC,
    CAF,
    CGE,
    MDA,
    NNM,
    PRE_AGGREGATORS,
    SERVER_OPTIMIZERS,
    SMEA,
    AggregationResult,
    Bucketing,
    Bulyan,
    CenteredClipping,
    Clip,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedYogi,
    GeometricMedian,
    Krum,
    MeaMed,
    MoNNA,
    MultiKrum,
    Pipeline,
    ServerSGD,
    Strategy,
    TrimmedMean,
    parse_strategy,
    to_dict,
)
from velocity.types import ClientUpdate, ParamSpec, RoundSummary

__version__ = "0.1.0"

__all__ = [
    "ALL_STRATEGIES",
    "ARC",
    "CAF",
    "CGE",
    "MDA",
    "NNM",
    "PRE_AGGREGATORS",
    "SERVER_OPTIMIZERS",
    "SMEA",
    "AggregationResult",
    "Bucketing",
    "Bulyan",
    "CenteredClipping",
    "ClientUpdate",
    "Clip",
    "ConfigurationError",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedMedian",
    "FedProx",
    "FedYogi",
    "GeometricMedian",
    "Krum",
    "MeaMed",
    "MoNNA",
    "MultiKrum",
    "ParamSpec",
    "Pipeline",
    "ProtocolError",
    "RoundSummary",
    "SecurityError",
    "ServerSGD",
    "Strategy",
    "TrimmedMean",
    "ValidationError",
    "VelocityError",
    "VelocityServer",
    "__version__",
    "kernels",
    "parse_strategy",
    "to_dict",
]
