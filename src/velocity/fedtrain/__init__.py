"""The aumai-fedtrain API under velocity's namespace, running on velocity's round engine.

Port a program with one line: ``from aumai_fedtrain import ...`` becomes
``from velocity.fedtrain import ...`` (and ``aumai_fedtrain.models`` becomes
:mod:`velocity.fedtrain.models`).

- Models (pydantic v2, bounded, JSON round-trip): :class:`TrainingConfig`,
  :class:`FederatedNode`, :class:`LocalUpdate`, :class:`GlobalState`,
  :class:`TrainingResult`.
- Tools: :class:`HashVerifier` (SHA-256 of the gradients), :class:`CreditTracker` (samples
  per node), :class:`GradientAverager` (the element-wise mean).
- :class:`UpdateProvider`: where updates come from; :class:`SimulatedNodes` is a real
  simulation (seeded linear-regression shards, AdamW local steps).
- :class:`DiLoCoCoordinator`: rounds on one :class:`velocity.server.RoundEngine` per run,
  through :class:`FedtrainClients` (an aumai provider as an engine provider), an unweighted
  mean and :class:`velocity.strategies.DiLoCo`'s outer Nesterov step.

The command line is ``velocity fedtrain run`` and ``velocity fedtrain verify``;
``docs/fedtrain.md`` is the guide.

Examples
--------
>>> from velocity.fedtrain import DiLoCoCoordinator, SimulatedNodes, TrainingConfig
>>> config = TrainingConfig(model_name="demo", learning_rate=1e-3, batch_size=32,
...                         local_steps=10, global_rounds=5, num_nodes=3)
>>> sim = SimulatedNodes(config, seed=0)
>>> result = DiLoCoCoordinator().run_training(config, sim.nodes, sim)
>>> result.rounds_completed, result.final_loss < result.loss_history[0]
(5, True)
"""

from velocity import __version__
from velocity.fedtrain._coordinator import DiLoCoCoordinator
from velocity.fedtrain._files import MAX_FILE_BYTES, read_config, read_update
from velocity.fedtrain._provider import FedtrainClients, UpdateProvider, check_updates
from velocity.fedtrain._simulation import SimulatedNodes
from velocity.fedtrain._tools import CreditTracker, GradientAverager, HashVerifier
from velocity.fedtrain.models import (
    MAX_GRADIENT_KEYS,
    MAX_GRADIENT_VALUES,
    FederatedNode,
    GlobalState,
    LocalUpdate,
    TrainingConfig,
    TrainingResult,
)

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_GRADIENT_KEYS",
    "MAX_GRADIENT_VALUES",
    "CreditTracker",
    "DiLoCoCoordinator",
    "FederatedNode",
    "FedtrainClients",
    "GlobalState",
    "GradientAverager",
    "HashVerifier",
    "LocalUpdate",
    "SimulatedNodes",
    "TrainingConfig",
    "TrainingResult",
    "UpdateProvider",
    "__version__",
    "check_updates",
    "read_config",
    "read_update",
]
