"""The communication graph of a SecAgg+ round: a Harary graph on randomly permuted labels.

The Harary graph H(k, n) for even k puts the n clients on a cycle and joins each to the k/2
nearest on either side. SecAgg+ (Bell et al. 2020, section 3) draws the cycle's order
uniformly at random, so every client's neighbourhood is a uniformly random k-subset of the
others — what the tail bounds of :mod:`velocity.secagg._params` assume. With ``k = n - 1``
the graph is complete (SecAgg, Bonawitz et al. 2017).

The order is a function of a 32-byte graph seed that the server and every client know, so
each client checks that the server forwards exactly its neighbours.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from velocity.errors import ConfigurationError

__all__ = ["CommunicationGraph"]


@dataclass(frozen=True)
class CommunicationGraph:
    """A k-regular graph on clients ``0..n-1``: Harary on the cycle ``order``, or complete.

    Parameters
    ----------
    n, k : int
        Clients and degree; ``k = n - 1`` (complete) or an even ``k`` in ``[2, n - 2]``.
    order : tuple of int
        A permutation of ``0..n-1``: the clients in cycle order.

    Examples
    --------
    >>> g = CommunicationGraph(n=6, k=2, order=(0, 1, 2, 3, 4, 5))
    >>> g.neighbours(0), g.neighbours(3)
    ((1, 5), (2, 4))
    >>> CommunicationGraph(n=4, k=3, order=(0, 1, 2, 3)).neighbours(2)
    (0, 1, 3)
    """

    n: int
    k: int
    order: tuple[int, ...]

    def __post_init__(self) -> None:
        if sorted(self.order) != list(range(self.n)):
            raise ConfigurationError("CommunicationGraph.order must be a permutation of 0..n-1")
        if not (self.k == self.n - 1 or (self.k % 2 == 0 and 2 <= self.k <= self.n - 2)):
            raise ConfigurationError(
                f"CommunicationGraph.k must be n - 1 = {self.n - 1} or an even int in "
                f"[2, {self.n - 2}]; got {self.k}"
            )

    @classmethod
    def from_seed(cls, n: int, k: int, seed: bytes) -> CommunicationGraph:
        """The graph whose cycle order is a uniform permutation drawn from ``seed``."""
        digest = hashlib.sha256(b"velocity-secagg/v1/graph\x00" + seed).digest()
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(digest))))
        return cls(n=n, k=k, order=tuple(int(v) for v in rng.permutation(n)))

    @functools.cached_property
    def _position(self) -> Sequence[int]:
        position = [0] * self.n
        for pos, client in enumerate(self.order):
            position[client] = pos
        return position

    @property
    def complete(self) -> bool:
        """Whether the graph is complete (``k = n - 1``)."""
        return self.k == self.n - 1

    @functools.cached_property
    def _memo(self) -> dict[int, tuple[int, ...]]:
        return {}

    def neighbours(self, u: int) -> tuple[int, ...]:
        """The ``k`` neighbours of client ``u``, sorted."""
        memo = self._memo
        if u not in memo:
            if self.complete:
                memo[u] = tuple(v for v in range(self.n) if v != u)
            else:
                pos, half, n = self._position[u], self.k // 2, self.n
                out = {self.order[(pos + s) % n] for s in range(-half, half + 1) if s}
                memo[u] = tuple(sorted(out))
        return memo[u]
