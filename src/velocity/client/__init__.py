"""Client-side local training.

:class:`Trainer` runs a client's local SGD (momentum, weight decay, FedProx's proximal term)
from the global model and writes its update, ``new_params − global_params``, as one flat
float32 vector, straight into the client's row of the round's ``(n, d)`` update stack. The
same code path serves simulation and a deployed node. :class:`TrainConfig` holds the
settings, :class:`TrainResult` what came out.

Examples
--------
>>> import torch
>>> from velocity.client import TrainConfig, Trainer
>>> from velocity.models import build_model
>>> trainer = Trainer(build_model("mnist-2nn", seed=0), TrainConfig(batch_size=8, lr=0.05))
>>> x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
>>> global_params = trainer.spec.flatten(trainer.model.state_dict())
>>> updates = trainer.spec.stack(2)                     # the round's (n, d) stack
>>> for i, rows in enumerate([torch.arange(0, 16), torch.arange(16, 64)]):
...     result = trainer.train(global_params, x, y, rows, out=updates[i],
...                            generator=torch.Generator().manual_seed(i))
>>> result.num_samples, result.metrics["steps"]
(48, 6.0)
"""

from __future__ import annotations

from velocity.client._config import TrainConfig, TrainResult
from velocity.client._device import DEVICE_CHOICES, resolve_device
from velocity.client._stages import WorkerMomentum, run_client_stages
from velocity.client._trainer import LossFn, Trainer

__all__ = [
    "DEVICE_CHOICES",
    "LossFn",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "WorkerMomentum",
    "resolve_device",
    "run_client_stages",
]
