"""A lazy population of simulated clients."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from velocity.errors import ConfigurationError, ValidationError

__all__ = [
    "ClientPopulation",
    "Population",
    "UniformPopulation",
    "VirtualPopulation",
    "client_index",
]


class Population(Protocol):
    """What the simulated side needs of a population: ids, indices and data sizes."""

    @property
    def num_clients(self) -> int: ...

    def client_id(self, index: int) -> str: ...

    def index_of(self, client_id: str) -> int: ...

    def indices(self, index: int) -> Tensor: ...

    def num_samples(self, index: int) -> int: ...

    def sizes(self) -> Tensor: ...


class _Indexed:
    """Client ids ``"client-<i>"`` zero-padded to the population's width (so they sort in
    index order), and their inverse: what every population shares."""

    _num_clients: int
    _width: int

    def _name_clients(self, num_clients: int) -> None:
        self._num_clients = num_clients
        self._width = len(str(num_clients - 1))

    @property
    def num_clients(self) -> int:
        return self._num_clients

    def client_id(self, index: int) -> str:
        return f"client-{index:0{self._width}d}"

    def index_of(self, client_id: str) -> int:
        """Inverse of :meth:`client_id`."""
        index = client_index(client_id)
        if not 0 <= index < self._num_clients:
            raise ValidationError(f"unknown client id {client_id!r}")
        return index


class ClientPopulation(_Indexed):
    """``num_clients`` registered clients whose data are ranges of one index array.

    Client ``i`` owns ``order[offsets[i]:offsets[i + 1]]`` — the CSR layout of
    :class:`velocity.data.Partition` — so registering 100,000 clients costs two integer arrays
    and no per-client object or tensor. Client ids are ``"client-<i>"`` zero-padded to the
    population's width, so they sort in index order.

    >>> import torch
    >>> pop = ClientPopulation(torch.arange(6), torch.tensor([0, 2, 6]))
    >>> pop.num_clients, pop.client_id(1), pop.num_samples(1), pop.indices(0).tolist()
    (2, 'client-1', 4, [0, 1])
    """

    def __init__(self, order: Tensor, offsets: Tensor) -> None:
        if offsets.ndim != 1 or offsets.numel() < 2:
            raise ConfigurationError("ClientPopulation needs at least one client (offsets)")
        if int(offsets[0]) != 0 or int(offsets[-1]) != order.numel():
            raise ValidationError(
                f"ClientPopulation: offsets must run from 0 to len(order)={order.numel()}; "
                f"got {int(offsets[0])}..{int(offsets[-1])}"
            )
        if bool((offsets[1:] < offsets[:-1]).any()):
            raise ValidationError("ClientPopulation: offsets must be non-decreasing")
        self._order = order
        self._offsets = offsets.to(torch.int64)
        self._name_clients(int(offsets.numel()) - 1)

    @classmethod
    def from_partition(cls, partition: object) -> ClientPopulation:
        """From any object with ``order`` and ``offsets`` tensors (a data Partition)."""
        return cls(partition.order, partition.offsets)  # type: ignore[attr-defined]

    def indices(self, index: int) -> Tensor:
        """The sample indices of client ``index`` (a view, no copy)."""
        start, stop = int(self._offsets[index]), int(self._offsets[index + 1])
        return self._order[start:stop]

    def num_samples(self, index: int) -> int:
        return int(self._offsets[index + 1] - self._offsets[index])

    def sizes(self) -> Tensor:
        return self._offsets[1:] - self._offsets[:-1]


class VirtualPopulation(_Indexed):
    """``num_clients`` clients of ``samples_per_client`` samples each, drawn from a pool.

    Client ``i`` owns a window of one fixed random permutation of the ``pool_size`` samples,
    starting at an offset derived from ``(seed, i)``, so windows overlap when the population
    needs more samples than the pool holds. Memory is one permutation of the pool, whatever
    ``num_clients`` is: registering 100,000 clients costs nothing per client. For scale
    experiments (many registered clients, few selected per round).

    >>> pop = VirtualPopulation(100_000, pool_size=60_000, samples_per_client=600, seed=0)
    >>> pop.num_samples(99_999), pop.indices(5).shape
    (600, torch.Size([600]))
    """

    def __init__(
        self, num_clients: int, *, pool_size: int, samples_per_client: int, seed: int
    ) -> None:
        if num_clients < 1 or pool_size < 1 or not 1 <= samples_per_client <= pool_size:
            raise ConfigurationError(
                "VirtualPopulation needs num_clients >= 1 and 1 <= samples_per_client <= "
                f"pool_size; got {num_clients}, {samples_per_client}, {pool_size}"
            )
        from velocity._random import torch_generator

        self._name_clients(num_clients)
        self._pool = pool_size
        self._spc = samples_per_client
        self._seed = seed
        self._perm = torch.randperm(pool_size, generator=torch_generator(seed, "virtual-pool"))
        self._steps = torch.arange(samples_per_client)

    def indices(self, index: int) -> Tensor:
        from velocity._random import derive_seed

        start = derive_seed(self._seed, index, "virtual-window") % self._pool
        return self._perm[(start + self._steps) % self._pool]

    def num_samples(self, index: int) -> int:
        return self._spc

    def sizes(self) -> Tensor:
        return torch.full((self._num_clients,), self._spc, dtype=torch.int64)


class UniformPopulation(_Indexed):
    """``num_clients`` clients of ``samples`` notional examples each, with no arrays at all.

    Client ``i`` owns examples ``i·samples … (i+1)·samples − 1`` of a virtual index space, so
    a population of a billion clients costs nothing until some of them are sampled (the
    synthetic quadratic federation of ``VelocityServer(layer_shapes=...)`` uses it).

    >>> pop = UniformPopulation(1_000_000_000, samples=100)
    >>> pop.client_id(7)[-3:], pop.num_samples(7), pop.indices(1).tolist()[:3]
    ('007', 100, [100, 101, 102])
    """

    def __init__(self, num_clients: int, *, samples: int) -> None:
        if num_clients < 1 or samples < 0:
            raise ConfigurationError(
                "UniformPopulation needs num_clients >= 1 and samples >= 0; got "
                f"{num_clients}, {samples}"
            )
        self._name_clients(num_clients)
        self._samples = samples

    def indices(self, index: int) -> Tensor:
        return torch.arange(index * self._samples, (index + 1) * self._samples)

    def num_samples(self, index: int) -> int:
        return self._samples

    def sizes(self) -> Tensor:
        return torch.full((self._num_clients,), self._samples, dtype=torch.int64)


def client_index(client_id: str) -> int:
    """The population index in a client id: ``"client-0007"`` -> 7 (bounds not checked)."""
    prefix = "client-"
    if (
        not isinstance(client_id, str)
        or not client_id.startswith(prefix)
        or not client_id[len(prefix) :].isdigit()
    ):
        raise ValidationError(f"unknown client id {client_id!r}; ids look like 'client-0007'")
    return int(client_id[len(prefix) :])
