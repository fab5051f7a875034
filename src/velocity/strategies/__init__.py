"""Aggregation strategies: the user's vocabulary for how a server combines client updates.

Every strategy is a frozen, hashable dataclass holding settings only (``Krum(f=2)``);
the arithmetic is in :mod:`velocity.kernels`. There are three kinds of stage:

- **aggregators** reduce the stacked updates ``(n, d)`` to one ``(d,)`` update
  (:data:`ALL_STRATEGIES`);
- **pre-aggregators** transform the stack before the aggregator (:data:`PRE_AGGREGATORS`);
- **server optimizers** turn the aggregate into a step on the global model
  (:data:`SERVER_OPTIMIZERS`).

:class:`Pipeline` composes them explicitly: zero or more pre-aggregators, one aggregator, at
most one server optimizer. Settings are validated on construction; limits that depend on the
round (``n`` versus ``f``) are checked by the kernels when called.

Examples
--------
>>> import torch
>>> from velocity.strategies import Clip, Krum, Pipeline, parse_strategy
>>> strategy = parse_strategy({"type": "Pipeline", "stages": ["Clip", {"type": "Krum", "f": 1}]})
>>> strategy == Pipeline(Clip(threshold=2.0), Krum(f=1))
True
>>> updates = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.1, 0.1], [90.0, 90.0]])
>>> result = strategy.aggregate(updates)
>>> result.metrics["rule"], result.metrics["n"], result.metrics["pre_aggregators"]
('Krum', 5, ['Clip'])
>>> Krum(f=-1)
Traceback (most recent call last):
...
velocity.errors.ConfigurationError: Krum.f must be an int >= 0; got -1
"""

from velocity.strategies._averaging import FedAvg, FedProx
from velocity.strategies._base import AggregationResult, Aggregator, PreAggregator, ServerOptimizer
from velocity.strategies._coordinatewise import FedMedian, MeaMed, TrimmedMean
from velocity.strategies._fair import QFedAvg, resolve_lipschitz
from velocity.strategies._iterative import CAF, CenteredClipping, GeometricMedian
from velocity.strategies._krum import Bulyan, Krum, MultiKrum
from velocity.strategies._parse import parse_strategy, to_dict
from velocity.strategies._pipeline import Pipeline
from velocity.strategies._preaggregators import ARC, NNM, Bucketing, Clip
from velocity.strategies._registry import (
    ALL_STRATEGIES,
    PRE_AGGREGATORS,
    SERVER_OPTIMIZERS,
    Strategy,
    describe_strategies,
)
from velocity.strategies._selection import CGE, MDA, SMEA, MoNNA
from velocity.strategies._server import (
    DiLoCo,
    FedAdagrad,
    FedAdam,
    FedAvgM,
    FedYogi,
    ServerSGD,
)
from velocity.strategies._stages import (
    AggregateStage,
    RoundBatch,
    ServerStepStage,
    mean_based,
    run_server_stages,
    server_chain,
)

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
    "AggregateStage",
    "AggregationResult",
    "Aggregator",
    "Bucketing",
    "Bulyan",
    "CenteredClipping",
    "Clip",
    "DiLoCo",
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
    "Pipeline",
    "PreAggregator",
    "QFedAvg",
    "RoundBatch",
    "ServerOptimizer",
    "ServerSGD",
    "ServerStepStage",
    "Strategy",
    "TrimmedMean",
    "describe_strategies",
    "mean_based",
    "parse_strategy",
    "resolve_lipschitz",
    "run_server_stages",
    "server_chain",
    "to_dict",
]
