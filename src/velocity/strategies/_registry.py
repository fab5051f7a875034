"""Every stage class by kind, the ``Strategy`` type, and the ``velocity strategies`` listing."""

from __future__ import annotations

import dataclasses
from typing import Any, Final, TypeAlias

from velocity.strategies._averaging import FedAvg, FedProx
from velocity.strategies._base import Aggregator, PreAggregator, ServerOptimizer, Stage
from velocity.strategies._constraints import constraints_of
from velocity.strategies._coordinatewise import FedMedian, MeaMed, TrimmedMean
from velocity.strategies._fair import QFedAvg
from velocity.strategies._iterative import CAF, CenteredClipping, GeometricMedian
from velocity.strategies._krum import Bulyan, Krum, MultiKrum
from velocity.strategies._pipeline import Pipeline
from velocity.strategies._preaggregators import ARC, NNM, Bucketing, Clip
from velocity.strategies._selection import CGE, MDA, SMEA, MoNNA
from velocity.strategies._server import (
    DiLoCo,
    FedAdagrad,
    FedAdam,
    FedAvgM,
    FedYogi,
    ServerSGD,
)

__all__ = [
    "ALL_STRATEGIES",
    "PRE_AGGREGATORS",
    "SERVER_OPTIMIZERS",
    "STAGE_CLASSES",
    "Strategy",
    "describe_strategies",
]

ALL_STRATEGIES: Final[tuple[type[Aggregator], ...]] = (
    FedAvg,
    FedProx,
    FedMedian,
    TrimmedMean,
    Krum,
    MultiKrum,
    MeaMed,
    GeometricMedian,
    Bulyan,
    MDA,
    MoNNA,
    SMEA,
    CenteredClipping,
    CGE,
    CAF,
    QFedAvg,
)
"""Every aggregator class; the seed's six first, in the seed's order."""

PRE_AGGREGATORS: Final[tuple[type[PreAggregator], ...]] = (Bucketing, Clip, ARC, NNM)
"""Every pre-aggregator class."""

SERVER_OPTIMIZERS: Final[tuple[type[ServerOptimizer], ...]] = (
    ServerSGD,
    FedAvgM,
    FedAdagrad,
    FedAdam,
    FedYogi,
    DiLoCo,
)
"""Every server optimizer class."""

STAGE_CLASSES: Final[tuple[type[Stage], ...]] = (
    *ALL_STRATEGIES,
    *PRE_AGGREGATORS,
    *SERVER_OPTIMIZERS,
)
"""Every class that may appear in a :class:`Pipeline`."""

Strategy: TypeAlias = (
    FedAvg
    | FedProx
    | FedMedian
    | TrimmedMean
    | Krum
    | MultiKrum
    | MeaMed
    | GeometricMedian
    | Bulyan
    | MDA
    | MoNNA
    | SMEA
    | CenteredClipping
    | CGE
    | CAF
    | QFedAvg
    | Pipeline
)
"""What a server aggregates with: one aggregator, or a :class:`Pipeline` around one."""


def _summary(cls: type[Stage]) -> str:
    lines = (cls.__doc__ or "").strip().splitlines()
    return lines[0] if lines else ""


def _parameters(cls: type[Stage]) -> list[dict[str, Any]]:
    table = constraints_of(cls)
    described: list[dict[str, Any]] = []
    for field in dataclasses.fields(cls):
        required = field.default is dataclasses.MISSING
        described.append(
            {
                "name": field.name,
                "required": required,
                "default": None if required else field.default,
                "accepts": table[field.name].describe(),
            }
        )
    return described


def describe_strategies() -> list[dict[str, Any]]:
    """One plain dict per stage class, for listings such as the ``velocity strategies`` command.

    Returns
    -------
    list of dict
        In registry order (aggregators, pre-aggregators, server optimizers), each with
        ``name``, ``kind`` (``"aggregator"``, ``"pre-aggregator"`` or ``"server-optimizer"``),
        ``summary`` (one line) and ``parameters``: a list of ``{"name", "required",
        "default", "accepts"}`` (``default`` is ``None`` when ``required``).

    Examples
    --------
    >>> krum = next(d for d in describe_strategies() if d["name"] == "Krum")
    >>> krum["kind"], [p["name"] for p in krum["parameters"]]
    ('aggregator', ['f', 'neighbors'])
    >>> krum["parameters"][1]["default"], krum["parameters"][1]["accepts"]
    ('n-f-2', "one of 'n-f-2', 'n-f-1'")
    """
    return [
        {
            "name": cls.__name__,
            "kind": cls.kind,
            "summary": _summary(cls),
            "parameters": _parameters(cls),
        }
        for cls in STAGE_CLASSES
    ]
