"""A synthetic heterogeneous quadratic federation (aggregation-only simulation)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from velocity._random import torch_generator
from velocity.errors import ConfigurationError
from velocity.sim.population import UniformPopulation
from velocity.sim.provider import ClientWork, SimulatedClients
from velocity.types import ClientUpdate

if TYPE_CHECKING:
    from velocity.sim.adversary import SimulatedAdversary

__all__ = ["QuadraticClients"]


class QuadraticClients(SimulatedClients):
    r"""Clients with objectives :math:`f_k(w) = \tfrac12 \sum_j a_{kj}(w_j - c_{kj})^2`.

    Curvatures :math:`a_{kj} \sim U[0.5, 2]` and optima :math:`c_k \sim N(\mu, \sigma^2 I)`,
    :math:`\mu \sim N(0, I)`, differ per client (heterogeneity ``sigma``), drawn lazily from
    ``(seed, client, "quadratic")`` — no per-client state is kept. Local training is
    ``steps`` gradient steps of size ``lr``, in closed form:
    :math:`w_s = c_k + (1 - \eta a_k)^s (w_0 - c_k)`. The global loss is the mean objective
    over the first ``eval_clients`` clients. Lets ``VelocityServer(layer_shapes=...)`` run a
    meaningful aggregation-only simulation without a dataset. Each client holds ``samples``
    notional examples (its FedAvg weight); :attr:`population` is built accordingly.
    """

    name: ClassVar[str] = "quadratic"

    def __init__(
        self,
        d: int,
        *,
        seed: int,
        sigma: float = 1.0,
        lr: float = 0.1,
        steps: int = 5,
        samples: int = 100,
        eval_clients: int = 64,
        num_clients: int = 10,
        dropout_rate: float = 0.0,
        adversary: SimulatedAdversary | None = None,
    ) -> None:
        super().__init__(
            UniformPopulation(num_clients, samples=samples),
            seed=seed,
            dropout_rate=dropout_rate,
            adversary=adversary,
        )
        self.d, self.sigma, self.lr, self.steps = d, sigma, lr, steps
        self.samples = samples
        self.centre = torch.randn(d, generator=torch_generator(seed, "quadratic-centre"))
        self.eval_ids = list(range(min(eval_clients, num_clients)))

    def objective(self, client: int) -> tuple[Tensor, Tensor]:
        """Curvature ``a_k`` and optimum ``c_k`` of client ``client``."""
        gen = torch_generator(self.seed, client, "quadratic")
        a = 0.5 + 1.5 * torch.rand(self.d, generator=gen)
        c = self.centre + self.sigma * torch.randn(self.d, generator=gen)
        return a, c

    def loss(self, params: Tensor) -> float:
        """Mean objective over the evaluation clients."""
        total = 0.0
        for client in self.eval_ids:
            a, c = self.objective(client)
            total += 0.5 * float((a * (params - c) ** 2).sum())
        return total / len(self.eval_ids)

    def train(self, work: ClientWork) -> ClientUpdate:
        if work.poison is not None:
            raise ConfigurationError(
                f"data-poisoning attacks ({work.poison.name}) need a dataset; the synthetic "
                "quadratic objective (layer_shapes) has no data to poison"
            )
        a, c = self.objective(work.index)
        shrink = (1.0 - self.lr * a) ** self.steps
        global_params = work.task.params
        end = c + shrink * (global_params - c)
        work.out.copy_(end - global_params)
        loss = 0.5 * float((a * (end - c) ** 2).sum())
        return ClientUpdate(work.task.client_id, self.samples, work.out, loss=loss)
