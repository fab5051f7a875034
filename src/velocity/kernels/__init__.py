"""Aggregation kernels: pure, vectorized functions on one stacked ``(n, d)`` update tensor.

Aggregators ``f(updates, weights=None, **settings) -> (d,)``; pre-aggregators
``g(updates, weights=None, **settings) -> (updates', weights')``; server optimizers
``step(params, delta, state, **hp) -> (params', state')``. See ``docs/kernels.md`` for the
contract, the definitions and how they are made fast. Also importable as ``velocity._core``.

Every aggregator and pre-aggregator follows one non-finite-row policy (``docs/kernels.md``):
rows holding NaN or ±inf are dropped and count against the rule's f; the rule runs on the
finite rows with f − k, and more non-finite rows than it tolerates raise ``ValidationError``.
"""

from __future__ import annotations

from velocity.kernels.arc import arc
from velocity.kernels.bucketing import bucketing
from velocity.kernels.bulyan import bulyan
from velocity.kernels.caf import caf
from velocity.kernels.centered_clipping import centered_clipping
from velocity.kernels.cge import cge
from velocity.kernels.clip import clip
from velocity.kernels.distances import pairwise_sq_distances
from velocity.kernels.geometric_median import geometric_median
from velocity.kernels.krum import krum, krum_scores, multi_krum
from velocity.kernels.mda import mda
from velocity.kernels.meamed import meamed
from velocity.kernels.mean import mean, nonfinite_rows
from velocity.kernels.median import median
from velocity.kernels.monna import monna
from velocity.kernels.nnm import nnm
from velocity.kernels.noise import apply_gaussian_noise
from velocity.kernels.qfedavg import qfedavg
from velocity.kernels.server_opt import fedadagrad, fedadam, fedavgm, fedyogi, server_sgd
from velocity.kernels.smea import smea
from velocity.kernels.trimmed_mean import trimmed_mean

AGGREGATORS = (
    "mean",
    "median",
    "trimmed_mean",
    "meamed",
    "geometric_median",
    "krum",
    "multi_krum",
    "bulyan",
    "mda",
    "monna",
    "smea",
    "centered_clipping",
    "cge",
    "caf",
    "qfedavg",
)
"""Names of the aggregator kernels: ``f(updates, weights, **settings) -> (d,)``; ``qfedavg``
takes the rows' losses too, ``qfedavg(updates, losses, weights, *, q, lipschitz)``."""

PRE_AGGREGATORS = ("bucketing", "clip", "arc", "nnm")
"""Names of the pre-aggregator kernels: ``g(updates, weights, **settings) -> (u', w')``."""

SERVER_OPTIMIZERS = ("server_sgd", "fedavgm", "fedadagrad", "fedadam", "fedyogi")
"""Names of the server optimizer steps."""

__all__ = [
    "AGGREGATORS",
    "PRE_AGGREGATORS",
    "SERVER_OPTIMIZERS",
    "apply_gaussian_noise",
    "arc",
    "bucketing",
    "bulyan",
    "caf",
    "centered_clipping",
    "cge",
    "clip",
    "fedadagrad",
    "fedadam",
    "fedavgm",
    "fedyogi",
    "geometric_median",
    "krum",
    "krum_scores",
    "mda",
    "meamed",
    "mean",
    "median",
    "monna",
    "multi_krum",
    "nnm",
    "nonfinite_rows",
    "pairwise_sq_distances",
    "qfedavg",
    "server_sgd",
    "smea",
    "trimmed_mean",
]
