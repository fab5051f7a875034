"""The simulated side: lazy client populations, participation models, simulated providers.

Everything the round engine must not know lives here: the population and its sampling,
dropout and stragglers (reported as ``ClientFailure``\\ s), the simulated adversary (a
client's poisoned data, and a server stage that crafts rows), and the providers whose clients
live in this process (``SequentialClients``, ``QuadraticClients``) or behind a loopback or
out-of-order seam (``backend: {type: ...}``).
"""

from velocity.sim.adversary import RoundAttack, SimulatedAdversary
from velocity.sim.backends import BACKENDS, Backend, BackendSpec, make_backend
from velocity.sim.population import ClientPopulation, Population, VirtualPopulation
from velocity.sim.provider import ClientWork, SequentialClients, SimulatedClients
from velocity.sim.quadratic import QuadraticClients
from velocity.sim.sampling import DropoutModel, FractionSampler, StragglerModel, select_clients
from velocity.sim.settings import SimulationSettings
from velocity.sim.transport import LoopbackClients, OutOfOrderClients
from velocity.types import UpdateProvider

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendSpec",
    "ClientPopulation",
    "ClientWork",
    "DropoutModel",
    "FractionSampler",
    "LoopbackClients",
    "OutOfOrderClients",
    "Population",
    "QuadraticClients",
    "RoundAttack",
    "SequentialClients",
    "SimulatedAdversary",
    "SimulatedClients",
    "SimulationSettings",
    "StragglerModel",
    "UpdateProvider",
    "VirtualPopulation",
    "make_backend",
    "select_clients",
]
