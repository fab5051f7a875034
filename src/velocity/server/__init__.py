"""Server side: the round engine, its builder, checkpoints, the ``VelocityServer`` facade and
ByzPy's parameter server."""

from velocity.server.builder import Federation, build_engine, make_simulation
from velocity.server.checkpoint import CheckpointStore
from velocity.server.engine import (
    Callback,
    Gathered,
    RoundAnnotator,
    RoundEngine,
    SyncRound,
    TriggerPolicy,
)
from velocity.server.parameter_server import ByzantineNode, HonestNode, ParameterServer
from velocity.server.velocity_server import VelocityServer

__all__ = [
    "ByzantineNode",
    "Callback",
    "CheckpointStore",
    "Federation",
    "Gathered",
    "HonestNode",
    "ParameterServer",
    "RoundAnnotator",
    "RoundEngine",
    "SyncRound",
    "TriggerPolicy",
    "VelocityServer",
    "build_engine",
    "make_simulation",
]
