"""ByzPy's ``PeerToPeer``: decentralized training of node objects over a topology.

A round, as ByzPy's decentralized runner defines it:

1. every honest node takes a local SGD half-step (``p2p_half_step(lr)``) and returns its
   new flat parameter vector;
2. every honest node sends that vector to its out-neighbours; every Byzantine node crafts
   one vector (``p2p_broadcast_vector(neighbor_vectors=..., like=...)``) from the honest
   vectors it received and sends it to its out-neighbours;
3. every honest node sets its model to its robust rule (``p2p_aggregate_and_set``, i.e.
   ``p2p_agg`` over ``[own half-step, *received]``).

Nodes ``0 .. H-1`` of the topology are the honest nodes in the order given, ``H ..`` the
Byzantine ones. Node calls of one phase run concurrently (one coroutine per actor); what a
node receives is ordered by sender index, so a run is deterministic whatever the timing.

Notes
-----
Differences from ByzPy 0.1.4 (docs/byzpy.md): ByzPy's runner computes a coordinate-wise
median of what a node received and discards it (the model stays at its half-step); here
the node's own ``p2p_agg`` result is written into its model, as ``P2PHonestMixin``
describes. ByzPy waits ``0.1`` s for messages to propagate; here messages are delivered in
process before the next phase starts, so no sleep. A Byzantine node with no honest
in-neighbour is shown node 0's half-step (ByzPy's ``template``). ``channel_name`` and the
contexts made by ``context_factory`` are accepted for API compatibility (the contexts are
kept in :attr:`PeerToPeer.contexts`); the vectorized trainer for large runs is
:mod:`velocity.p2p`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import torch
from torch import Tensor

from velocity.byzpy.engine.node.actors import (
    ByzantineNodeActor,
    HonestNodeActor,
    NodeActor,
    call_node,
    check_nodes,
    node_vector,
)
from velocity.errors import ConfigurationError, ProtocolError, ValidationError
from velocity.p2p.mixing import consensus_distance
from velocity.p2p.topology import Topology

__all__ = ["PeerToPeer"]

_HONEST_METHODS = ("p2p_half_step", "p2p_aggregate_and_set", "get_param_vector")
_BYZANTINE_METHODS = ("p2p_broadcast_vector",)


class PeerToPeer:
    """Peer-to-peer training of honest and Byzantine nodes over ``topology``.

    Parameters
    ----------
    honest_nodes : list of HonestNodeActor (or node objects)
        Nodes ``0 .. H-1``; each must have the :class:`P2PHonestMixin` methods and a
        ``p2p_agg`` aggregator (its robust rule over what it receives).
    byzantine_nodes : list of ByzantineNodeActor, optional
        Nodes ``H ..``; each must have ``p2p_broadcast_vector`` (:class:`P2PByzantineMixin`).
    topology : Topology
        On exactly ``H + B`` nodes.
    lr : float
        The half-step's learning rate, ``> 0`` (default 0.05).
    channel_name : str
        Accepted for API compatibility (messages are delivered in process).
    context_factory : callable ``(node_id: str, index: int) -> context``, optional
        Called once per node at :meth:`bootstrap`; the contexts are kept in :attr:`contexts`.

    Examples
    --------
    ::

        topology = Topology.ring(n=5, k=1)
        p2p = PeerToPeer(honest_nodes=honest_actors, byzantine_nodes=byz_actors,
                         topology=topology, lr=0.01)
        await p2p.bootstrap()
        for _ in range(100):
            await p2p.round()
        await p2p.shutdown()
    """

    def __init__(
        self,
        honest_nodes: list[HonestNodeActor],
        byzantine_nodes: list[ByzantineNodeActor] | None,
        topology: Topology,
        *,
        lr: float = 0.05,
        channel_name: str = "p2p",
        context_factory: Callable[[str, int], object] | None = None,
    ) -> None:
        self._honest = check_nodes(
            honest_nodes, HonestNodeActor, "PeerToPeer", "honest_nodes", _HONEST_METHODS
        )
        self._byzantine = check_nodes(
            byzantine_nodes or [],
            ByzantineNodeActor,
            "PeerToPeer",
            "byzantine_nodes",
            _BYZANTINE_METHODS,
        )
        if not self._honest:
            raise ConfigurationError(
                "PeerToPeer needs at least one honest node; honest_nodes is empty"
            )
        if not isinstance(topology, Topology):
            raise ConfigurationError(f"PeerToPeer.topology must be a Topology; got {topology!r}")
        n = len(self._honest) + len(self._byzantine)
        if topology.n_nodes != n:
            raise ConfigurationError(
                f"PeerToPeer.topology has {topology.n_nodes} nodes; the run has {n} "
                f"({len(self._honest)} honest + {len(self._byzantine)} Byzantine)"
            )
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
            raise ConfigurationError(f"PeerToPeer.lr must be a number > 0; got {lr!r}")
        if not isinstance(channel_name, str) or not channel_name:
            raise ConfigurationError(
                f"PeerToPeer.channel_name must be a non-empty str; got {channel_name!r}"
            )
        if context_factory is not None and not callable(context_factory):
            raise ConfigurationError(
                "PeerToPeer.context_factory must be callable (node_id, index) or None; "
                f"got {context_factory!r}"
            )
        self.topology = topology
        self.lr = float(lr)
        self.channel_name = channel_name
        self.context_factory = context_factory
        self.contexts: dict[str, object] = {}
        self.history: list[dict[str, float | int]] = []
        self._started = False
        self._closed = False

    @property
    def round_count(self) -> int:
        return len(self.history)

    async def bootstrap(self) -> None:
        """Make the node contexts (once); :meth:`round` bootstraps by itself if needed."""
        if self._closed:
            raise ProtocolError("PeerToPeer.bootstrap: the run has been shut down")
        if self._started:
            return
        if self.context_factory is not None:
            for index in range(self.topology.n_nodes):
                self.contexts[str(index)] = self.context_factory(str(index), index)
        self._started = True

    async def round(self) -> None:
        """One round: half-steps, Byzantine crafting, robust aggregation at every honest node."""
        if self._closed:
            raise ProtocolError("PeerToPeer.round: the run has been shut down")
        await self.bootstrap()
        h = len(self._honest)
        raw = await asyncio.gather(
            *(call_node(node, "p2p_half_step", self.lr) for node in self._honest)
        )
        halves = [
            node_vector(v, f"honest_nodes[{i}].p2p_half_step()", None) for i, v in enumerate(raw)
        ]
        d = halves[0].numel()
        for i, v in enumerate(halves):
            if v.numel() != d:
                raise ValidationError(
                    f"honest_nodes[{i}].p2p_half_step() returned {v.numel()} entries; "
                    f"node 0 returned {d}"
                )
        template = halves[0]

        async def craft(j: int) -> Tensor:
            received = [halves[u] for u in self.topology.in_neighbors(h + j) if u < h]
            crafted = await call_node(
                self._byzantine[j],
                "p2p_broadcast_vector",
                neighbor_vectors=received or [template],
                like=template,
            )
            return node_vector(crafted, f"byzantine_nodes[{j}].p2p_broadcast_vector()", d)

        crafted = await asyncio.gather(*(craft(j) for j in range(len(self._byzantine))))
        sent = [*halves, *crafted]

        async def mix(i: int) -> None:
            received = [sent[u] for u in self.topology.in_neighbors(i)]
            if received:
                await call_node(self._honest[i], "p2p_aggregate_and_set", halves[i], received)

        await asyncio.gather(*(mix(i) for i in range(h)))
        params = await asyncio.gather(
            *(call_node(node, "get_param_vector") for node in self._honest)
        )
        stacked = torch.stack(
            [
                node_vector(p, f"honest_nodes[{i}].get_param_vector()", d)
                for i, p in enumerate(params)
            ]
        )
        self.history.append(
            {
                "round": len(self.history) + 1,
                "consensus_distance": float(consensus_distance(stacked.double())),
            }
        )

    async def shutdown(self) -> None:
        """Close every node actor (idempotent); :meth:`round` then raises ProtocolError."""
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(
            *(n.close() for n in (*self._honest, *self._byzantine) if isinstance(n, NodeActor))
        )
