"""A synthetic heterogeneous quadratic federation (aggregation-only simulation)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from velocity._random import torch_generator
from velocity.errors import ConfigurationError
from velocity.sim.provider import ClientResult, UpdateProvider

if TYPE_CHECKING:
    from velocity.attacks import DataAttack

__all__ = ["QuadraticClients"]


class QuadraticClients(UpdateProvider):
    r"""Clients with objectives :math:`f_k(w) = \tfrac12 \sum_j a_{kj}(w_j - c_{kj})^2`.

    Curvatures :math:`a_{kj} \sim U[0.5, 2]` and optima :math:`c_k \sim N(\mu, \sigma^2 I)`,
    :math:`\mu \sim N(0, I)`, differ per client (heterogeneity ``sigma``), drawn lazily from
    ``(seed, client, "quadratic")`` — no per-client state is kept. Local training is
    ``steps`` gradient steps of size ``lr``, in closed form:
    :math:`w_s = c_k + (1 - \eta a_k)^s (w_0 - c_k)`. The global loss is the mean objective
    over the first ``eval_clients`` clients. Lets ``VelocityServer(layer_shapes=...)`` run a
    meaningful aggregation-only simulation without a dataset.
    """

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
    ) -> None:
        self.d, self.seed, self.sigma, self.lr, self.steps = d, seed, sigma, lr, steps
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

    def train_round(
        self,
        round_: int,
        clients: Sequence[int],
        global_params: Tensor,
        out: Tensor,
        *,
        poison: Mapping[int, DataAttack] | None = None,
    ) -> list[ClientResult]:
        if poison:
            names = sorted({a.name for a in poison.values()})
            raise ConfigurationError(
                f"data-poisoning attacks ({', '.join(names)}) need a dataset; the synthetic "
                "quadratic objective (layer_shapes) has no data to poison"
            )
        results = []
        for row, client in enumerate(clients):
            a, c = self.objective(client)
            shrink = (1.0 - self.lr * a) ** self.steps
            end = c + shrink * (global_params - c)
            out[row] = end - global_params
            loss = 0.5 * float((a * (end - c) ** 2).sum())
            results.append(ClientResult(client, self.samples, loss, {}))
        return results
