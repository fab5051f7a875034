"""``velocity.byzpy.engine.peer_to_peer.PeerToPeer`` against a hand-written decentralized loop."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor, nn

from velocity.byzpy.engine.node.actors import ByzantineNodeActor, HonestNodeActor
from velocity.byzpy.engine.node.base import ByzantineNode, HonestNode
from velocity.byzpy.engine.node.mixin import P2PByzantineMixin, P2PHonestMixin
from velocity.byzpy.engine.peer_to_peer import PeerToPeer, Topology
from velocity.errors import ConfigurationError, ProtocolError

D_IN = 4


class Mean:
    def aggregate(self, gradients: Sequence[Tensor]) -> Tensor:
        return torch.stack(list(gradients)).mean(0)


class Median:
    def aggregate(self, gradients: Sequence[Tensor]) -> Tensor:
        return torch.stack(list(gradients)).median(0).values


class Negate:
    """An attack: minus ten times the mean of what it received."""

    def apply(self, **kwargs: object) -> Tensor:
        grads = kwargs["honest_grads"]
        assert isinstance(grads, list)
        return -10.0 * torch.stack(grads).mean(0)


class Peer(P2PHonestMixin, HonestNode):
    def __init__(self, seed: int, agg: object) -> None:
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.model = nn.Linear(D_IN, 1)
        self.device = torch.device("cpu")
        self.criterion = nn.MSELoss()
        self.p2p_agg = agg  # type: ignore[assignment]
        self.x = torch.randn(32, D_IN, generator=g)
        self.y = (self.x @ torch.arange(1.0, D_IN + 1)).unsqueeze(-1)
        self.cursor = 0

    def next_batch(self) -> tuple[Tensor, Tensor]:
        lo = self.cursor
        self.cursor = (lo + 8) % 32
        return self.x[lo : lo + 8], self.y[lo : lo + 8]

    def honest_gradient(self, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def apply_server_gradient(self, grad_vec: Tensor) -> None:
        raise NotImplementedError


class Liar(P2PByzantineMixin, ByzantineNode):
    def __init__(self) -> None:
        self.device = torch.device("cpu")
        self.attack = Negate()  # type: ignore[assignment]

    def next_batch(self) -> tuple[Tensor, Tensor]:
        return torch.empty(0), torch.empty(0)

    def byzantine_gradient(
        self, x: Tensor, y: Tensor, honest_grads: Sequence[Tensor] | None = None
    ) -> Tensor:
        raise NotImplementedError

    def apply_server_gradient(self, grad_vec: Tensor) -> None:
        raise NotImplementedError


def _reference(
    topology: Topology, h: int, b: int, agg: object, rounds: int, lr: float
) -> list[Tensor]:
    honest = [Peer(i, agg) for i in range(h)]
    byz = [Liar() for _ in range(b)]
    for _ in range(rounds):
        halves = [node.p2p_half_step(lr) for node in honest]
        crafted = []
        for j, node in enumerate(byz):
            got = [halves[u] for u in sorted(topology.in_neighbors(h + j)) if u < h]
            crafted.append(
                node.p2p_broadcast_vector(neighbor_vectors=got or [halves[0]], like=halves[0])
            )
        sent = halves + crafted
        for i, node in enumerate(honest):
            received = [sent[u] for u in sorted(topology.in_neighbors(i))]
            node.p2p_aggregate_and_set(halves[i], received)
    return [node.get_param_vector() for node in honest]


async def _run(
    topology: Topology, h: int, b: int, agg: object, rounds: int, lr: float, *, actors: bool
) -> tuple[PeerToPeer, list[Tensor]]:
    if actors:
        honest: list[object] = [await HonestNodeActor.spawn(Peer, args=(i, agg)) for i in range(h)]
        byz: list[object] = [await ByzantineNodeActor.spawn(Liar) for _ in range(b)]
    else:
        honest = [Peer(i, agg) for i in range(h)]
        byz = [Liar() for _ in range(b)]
    p2p = PeerToPeer(honest, byz, topology, lr=lr)  # type: ignore[arg-type]
    await p2p.bootstrap()
    for _ in range(rounds):
        await p2p.round()
    objs = [n.node if isinstance(n, HonestNodeActor) else n for n in honest]
    params = [o.get_param_vector() for o in objs]  # type: ignore[attr-defined]
    await p2p.shutdown()
    return p2p, params


@pytest.mark.parametrize("actors", [True, False])
def test_matches_the_decentralized_loop_bit_for_bit(actors: bool) -> None:
    topology = Topology.ring(6, k=1)
    want = _reference(topology, 5, 1, Median(), rounds=5, lr=0.05)
    p2p, got = asyncio.run(_run(topology, 5, 1, Median(), 5, 0.05, actors=actors))
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)
    assert p2p.round_count == 5


def test_consensus_distance_shrinks_under_mean_gossip_on_a_complete_graph() -> None:
    # lr tiny: mixing dominates; the complete graph averages everything in one round.
    p2p, _ = asyncio.run(_run(Topology.complete(4), 4, 0, Mean(), 3, 1e-6, actors=False))
    dists = [r["consensus_distance"] for r in p2p.history]
    assert dists[0] < 1e-8
    assert all(d < 1e-8 for d in dists)
    # on a ring, it decreases round after round
    p2p, _ = asyncio.run(_run(Topology.ring(8, k=1), 8, 0, Mean(), 6, 1e-6, actors=False))
    dists = [r["consensus_distance"] for r in p2p.history]
    assert all(b < a for a, b in itertools.pairwise(dists))


def test_median_resists_a_liar_the_mean_does_not() -> None:
    topology = Topology.complete(7)
    _, med = asyncio.run(_run(topology, 5, 2, Median(), 4, 0.05, actors=False))
    _, mean = asyncio.run(_run(topology, 5, 2, Mean(), 4, 0.05, actors=False))
    # each against the same rule without the liars
    med_err = (med[0] - _reference(Topology.complete(5), 5, 0, Median(), 4, 0.05)[0]).norm()
    mean_err = (mean[0] - _reference(Topology.complete(5), 5, 0, Mean(), 4, 0.05)[0]).norm()
    assert med_err < 0.2 * mean_err


def test_errors_name_the_field() -> None:
    peers = [Peer(0, Mean()), Peer(1, Mean())]
    with pytest.raises(ConfigurationError, match="3 nodes; the run has 2"):
        PeerToPeer(peers, [], Topology.ring(3))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="lr"):
        PeerToPeer(peers, None, Topology.ring(2), lr=0.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="honest_nodes is empty"):
        PeerToPeer([], None, Topology.complete(2))
    with pytest.raises(ConfigurationError, match="topology"):
        PeerToPeer(peers, None, "ring")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"byzantine_nodes\[0\]"):
        PeerToPeer(peers[:1], [peers[1]], Topology.ring(2))  # type: ignore[list-item]


def test_round_after_shutdown_is_refused_and_contexts_are_made() -> None:
    made: list[tuple[str, int]] = []

    async def main() -> None:
        p2p = PeerToPeer(
            [Peer(0, Mean()), Peer(1, Mean())],  # type: ignore[list-item]
            None,
            Topology.ring(2),
            context_factory=lambda name, idx: made.append((name, idx)) or name,
        )
        await p2p.round()
        assert p2p.contexts == {"0": "0", "1": "1"}
        await p2p.shutdown()
        with pytest.raises(ProtocolError):
            await p2p.round()

    asyncio.run(main())
    assert made == [("0", 0), ("1", 1)]
