"""Mixins that give a node the peer-to-peer steps :class:`PeerToPeer` calls.

:class:`P2PHonestMixin` needs, on the concrete node: ``model`` (an ``nn.Module``),
``device``, ``criterion`` (the loss module), ``next_batch()``, ``p2p_agg`` (a
:class:`velocity.byzpy.aggregators.Aggregator`, the node's robust rule over what it
receives) and optionally ``p2p_pre`` (a pre-aggregator). :class:`P2PByzantineMixin` needs
``device`` and ``attack`` (a :class:`velocity.byzpy.attacks.Attack`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from velocity.byzpy.aggregators.base import Aggregator
    from velocity.byzpy.attacks.base import Attack
    from velocity.byzpy.pre_aggregators.base import PreAggregator

__all__ = ["P2PByzantineMixin", "P2PHonestMixin"]


def _flat(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


class P2PHonestMixin:
    """Local SGD half-steps and robust mixing for an honest peer-to-peer node."""

    model: nn.Module
    device: torch.device
    criterion: nn.Module
    p2p_agg: Aggregator
    p2p_pre: PreAggregator | None = None

    def next_batch(self) -> tuple[Tensor, Tensor]:  # provided by the concrete node
        raise NotImplementedError

    def get_param_vector(self) -> Tensor:
        """The model's parameters as one flat vector (in ``model.parameters()`` order)."""
        return _flat(self.model).to(self.device)

    def set_param_vector(self, vec: Tensor) -> None:
        """Write a flat vector into the model's parameters."""
        vec = vec.reshape(-1)
        total = sum(p.numel() for p in self.model.parameters())
        if vec.numel() != total:
            raise ValueError(
                f"set_param_vector: the vector has {vec.numel()} entries; the model has {total}"
            )
        offset = 0
        with torch.no_grad():
            for p in self.model.parameters():
                n = p.numel()
                p.copy_(vec[offset : offset + n].view_as(p).to(p.device, p.dtype))
                offset += n

    def p2p_half_step(self, lr: float) -> Tensor:
        """One SGD step ``θ ← θ − lr ∇L`` on the next minibatch; return the new flat ``θ``."""
        x, y = self.next_batch()
        self.model.zero_grad(set_to_none=True)
        loss = self.criterion(self.model(x), y)
        loss.backward()
        with torch.no_grad():
            for p in self.model.parameters():
                if p.grad is not None:
                    p.add_(p.grad, alpha=-lr)
        return self.get_param_vector()

    def p2p_aggregate_and_set(
        self, self_theta_half: Tensor, neighbor_vectors: Sequence[Tensor]
    ) -> None:
        """Set the model to ``p2p_agg`` over ``[own half-step, *received vectors]``
        (``p2p_pre`` first, when set)."""
        vectors: list[Tensor] = [self_theta_half, *neighbor_vectors]
        if self.p2p_pre is not None:
            vectors = [torch.as_tensor(v) for v in self.p2p_pre.pre_aggregate(vectors)]
        self.set_param_vector(torch.as_tensor(self.p2p_agg.aggregate(vectors)))


class P2PByzantineMixin:
    """A Byzantine peer-to-peer node: it broadcasts what its attack crafts."""

    device: torch.device
    attack: Attack

    def p2p_broadcast_vector(
        self, *, neighbor_vectors: Sequence[Tensor] | None = None, like: Tensor | None = None
    ) -> Tensor:
        """The crafted vector, from the honest vectors this node received (``like``: the
        dtype and device to return)."""
        crafted = self.attack.apply(
            model=None, x=None, y=None, honest_grads=list(neighbor_vectors or ()), base_grad=None
        )
        out = torch.as_tensor(crafted)
        if like is not None:
            out = out.to(device=like.device, dtype=like.dtype)
        return out
