"""The ``UpdateProvider`` seam and its in-process implementation."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from velocity._random import torch_generator

__all__ = ["ClientResult", "SequentialClients", "UpdateProvider"]


@dataclass(frozen=True)
class ClientResult:
    """What a client reports besides its delta (which sits in the round's stack)."""

    client: int
    num_samples: int
    loss: float | None
    metrics: dict[str, float] = field(default_factory=dict)


class UpdateProvider(ABC):
    """Where clients live: the round loop asks for updates and never knows more.

    ``train_round`` trains the given clients from ``global_params`` and writes client
    ``clients[j]``'s update (new − global) into ``out[j]`` — a row of the round's preallocated
    ``(n, d)`` stack — returning one :class:`ClientResult` per client, in order.
    Implementations: :class:`SequentialClients` (this process, one after another); later
    vectorized, Ray and remote-node providers.
    """

    @abstractmethod
    def train_round(
        self, round_: int, clients: Sequence[int], global_params: Tensor, out: Tensor
    ) -> list[ClientResult]: ...

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release resources (workers, connections). Default: nothing to release."""


class SequentialClients(UpdateProvider):
    """Train the clients one after another in this process with one reusable trainer.

    Client ``c`` in round ``r`` shuffles its batches with a generator derived from
    ``(seed, r, c, "train")``, so its update is the same whatever else runs in the round.
    """

    def __init__(self, trainer: Any, x: Tensor, y: Tensor, population: Any, *, seed: int) -> None:
        self.trainer = trainer
        self.x = x
        self.y = y
        self.population = population
        self.seed = seed

    def train_round(
        self, round_: int, clients: Sequence[int], global_params: Tensor, out: Tensor
    ) -> list[ClientResult]:
        results = []
        for row, client in enumerate(clients):
            res = self.trainer.train(
                global_params,
                self.x,
                self.y,
                self.population.indices(client),
                generator=torch_generator(self.seed, round_, client, "train"),
                out=out[row],
            )
            results.append(ClientResult(client, res.num_samples, res.loss, dict(res.metrics)))
        return results
