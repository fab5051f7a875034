"""The ``UpdateProvider`` seam and its in-process implementation."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import Tensor

from velocity._random import torch_generator
from velocity.errors import ConfigurationError

if TYPE_CHECKING:
    from velocity.attacks import DataAttack

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
    ``poison`` maps some of the clients to a :class:`~velocity.attacks.DataAttack`: those
    train on their poisoned data (``attack.poison``, generator derived from
    ``(seed, round, client, "poison")``) and their update is multiplied by
    ``attack.update_scale()``. Providers that cannot poison data raise
    :class:`~velocity.errors.ConfigurationError` when it is non-empty.
    Implementations: :class:`SequentialClients` (this process, one after another); later
    vectorized, Ray and remote-node providers.
    """

    @abstractmethod
    def train_round(
        self,
        round_: int,
        clients: Sequence[int],
        global_params: Tensor,
        out: Tensor,
        *,
        poison: Mapping[int, DataAttack] | None = None,
    ) -> list[ClientResult]: ...

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release resources (workers, connections). Default: nothing to release."""


class SequentialClients(UpdateProvider):
    """Train the clients one after another in this process with one reusable trainer.

    Client ``c`` in round ``r`` shuffles its batches with a generator derived from
    ``(seed, r, c, "train")``, so its update is the same whatever else runs in the round.
    """

    def __init__(
        self,
        trainer: Any,
        x: Tensor,
        y: Tensor,
        population: Any,
        *,
        seed: int,
        num_classes: int | None = None,
    ) -> None:
        self.trainer = trainer
        self.x = x
        self.y = y
        self.population = population
        self.seed = seed
        self.num_classes = num_classes

    def train_round(
        self,
        round_: int,
        clients: Sequence[int],
        global_params: Tensor,
        out: Tensor,
        *,
        poison: Mapping[int, DataAttack] | None = None,
    ) -> list[ClientResult]:
        results = []
        for row, client in enumerate(clients):
            x, y, idx = self.x, self.y, self.population.indices(client)
            attack = None if poison is None else poison.get(client)
            if attack is not None:
                x, y = poison_client_data(
                    attack,
                    self.x[idx],
                    self.y[idx],
                    num_classes=self._classes(),
                    seed=self.seed,
                    round_=round_,
                    client=client,
                )
                idx = _arange_like(idx)
            res = self.trainer.train(
                global_params,
                x,
                y,
                idx,
                generator=torch_generator(self.seed, round_, client, "train"),
                out=out[row],
            )
            scale_poisoned_update(attack, out[row])
            results.append(ClientResult(client, res.num_samples, res.loss, dict(res.metrics)))
        return results

    def _classes(self) -> int:
        if self.num_classes is None:
            if self.y.ndim != 1 or self.y.is_floating_point():
                raise ConfigurationError(
                    "data poisoning needs integer class labels; this dataset has none"
                )
            self.num_classes = int(self.y.max()) + 1
        return self.num_classes


def poison_client_data(
    attack: DataAttack,
    x: Tensor,
    y: Tensor,
    *,
    num_classes: int,
    seed: int,
    round_: int,
    client: int,
) -> tuple[Tensor, Tensor]:
    """``attack.poison`` of one client's data with the generator every provider must use:
    derived from ``(seed, round, client, "poison")``."""
    generator = torch_generator(seed, round_, client, "poison")
    return attack.poison(x, y, num_classes=num_classes, generator=generator)


def scale_poisoned_update(attack: DataAttack | None, row: Tensor) -> None:
    """Multiply a poisoned client's update row by ``attack.update_scale()`` in place."""
    if attack is not None and attack.update_scale() != 1.0:
        row.mul_(attack.update_scale())


def _arange_like(idx: Tensor) -> Tensor:
    import torch

    return torch.arange(idx.shape[0], dtype=idx.dtype, device=idx.device)
