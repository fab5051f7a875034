"""Simulation engine: lazy client population, participation models, update providers."""

from velocity.sim.population import ClientPopulation, VirtualPopulation
from velocity.sim.provider import ClientResult, SequentialClients, UpdateProvider
from velocity.sim.quadratic import QuadraticClients
from velocity.sim.records import RoundRecord
from velocity.sim.sampling import DropoutModel, StragglerModel, select_clients

__all__ = [
    "ClientPopulation",
    "ClientResult",
    "DropoutModel",
    "QuadraticClients",
    "RoundRecord",
    "SequentialClients",
    "StragglerModel",
    "UpdateProvider",
    "VirtualPopulation",
    "select_clients",
]
