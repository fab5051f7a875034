"""The node classes a ByzPy script subclasses: :class:`HonestNode` and :class:`ByzantineNode`.

A node owns its model, data and optimizer; the parameter server only moves gradient
vectors. An honest node computes the gradient of its loss on its next minibatch
(:meth:`HonestNode.honest_gradient_for_next_batch`); a Byzantine node crafts a vector,
usually from the honest gradients of the round
(:meth:`ByzantineNode.byzantine_gradient_for_next_batch`); both apply the aggregate the
server sends back (:meth:`Node.apply_server_gradient`). Wrap them in
:class:`~velocity.byzpy.engine.node.actors.HonestNodeActor` /
:class:`~velocity.byzpy.engine.node.actors.ByzantineNodeActor` to run them on an actor.

Gradients are flat 1-D torch tensors of one length ``d`` for every node of a server.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["ByzantineNode", "HonestNode", "Node"]


class Node(ABC):
    """What every node does: draw its next minibatch and apply the server's aggregate."""

    @abstractmethod
    def next_batch(self) -> tuple[Tensor, Tensor]:
        """The node's next ``(x, y)`` minibatch."""

    @abstractmethod
    def apply_server_gradient(self, grad_vec: Tensor) -> None:
        """Apply the aggregated gradient ``grad_vec`` (flat, ``(d,)``) to the local model."""


class HonestNode(Node, ABC):
    """A node that computes honest minibatch gradients."""

    @abstractmethod
    def honest_gradient(self, x: Tensor, y: Tensor) -> Tensor:
        """The flat ``(d,)`` gradient of the node's loss on ``(x, y)``."""

    def honest_gradient_for_next_batch(self) -> Tensor:
        """:meth:`honest_gradient` on :meth:`next_batch`, detached."""
        x, y = self.next_batch()
        return self.honest_gradient(x, y).detach()


class ByzantineNode(Node, ABC):
    """A node that submits crafted vectors instead of honest gradients."""

    @abstractmethod
    def byzantine_gradient(
        self, x: Tensor, y: Tensor, honest_grads: Sequence[Tensor] | None = None
    ) -> Tensor:
        """The flat ``(d,)`` vector this node submits, given the round's honest gradients."""

    def byzantine_gradient_for_next_batch(
        self, honest_grads: Sequence[Tensor] | None = None
    ) -> Tensor:
        """:meth:`byzantine_gradient` with empty ``x`` and ``y`` (as in ByzPy), detached."""
        x = torch.empty(0)
        y = torch.empty(0, dtype=torch.long)
        return self.byzantine_gradient(x, y, honest_grads=honest_grads).detach()
