"""Server side: the round loop, checkpoints, the ``VelocityServer`` facade and ByzPy's
parameter server."""

from velocity.server.checkpoint import CheckpointStore
from velocity.server.parameter_server import ByzantineNode, HonestNode, ParameterServer
from velocity.server.simulation import Simulation, SimulationSettings
from velocity.server.velocity_server import VelocityServer

__all__ = [
    "ByzantineNode",
    "CheckpointStore",
    "HonestNode",
    "ParameterServer",
    "Simulation",
    "SimulationSettings",
    "VelocityServer",
]
