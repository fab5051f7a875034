"""Server side: the round loop, checkpoints and the ``VelocityServer`` facade."""

from velocity.server.checkpoint import CheckpointStore
from velocity.server.simulation import Simulation, SimulationSettings
from velocity.server.velocity_server import VelocityServer

__all__ = ["CheckpointStore", "Simulation", "SimulationSettings", "VelocityServer"]
