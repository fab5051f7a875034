"""Every example of the seed's ByzPy API reference, with ``byzpy`` replaced by ``velocity.byzpy``.

Names an example leaves undefined (``grad1``, ``honest_actors``, a registered pipeline) are
made here with the smallest real objects; the example's own lines are kept as written. Two
examples use backends this build refuses (``"gpu"``, ``"tcp://..."``): the test checks the
refusal is the documented ``ConfigurationError`` naming the working alternative.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor, nn

from velocity.errors import ConfigurationError


def test_aggregator_base_example() -> None:
    from velocity.byzpy.aggregators.coordinate_wise.median import CoordinateWiseMedian

    aggregator = CoordinateWiseMedian()
    gradients = [torch.randn(100) for _ in range(10)]
    result = aggregator.aggregate(gradients)
    assert result.shape == torch.Size([100])
    assert torch.equal(result, torch.stack(gradients).median(0).values) or torch.allclose(
        result, torch.stack(gradients).quantile(0.5, dim=0)
    )


def test_coordinate_wise_examples() -> None:
    from velocity.byzpy import CoordinateWiseMedian, CoordinateWiseTrimmedMean

    aggregator = CoordinateWiseMedian(chunk_size=4096)
    gradients = [torch.randn(1000) for _ in range(10)]
    result = aggregator.aggregate(gradients)
    assert result.shape == (1000,)
    aggregator2 = CoordinateWiseTrimmedMean(f=2, chunk_size=2048)
    result = aggregator2.aggregate(gradients)
    assert result.shape == (1000,)
    sorted_ = torch.stack(gradients).sort(0).values
    assert torch.allclose(result, sorted_[2:8].mean(0), atol=1e-6)


def test_krum_examples() -> None:
    from velocity.byzpy import CenteredClipping, Krum, MultiKrum

    gradients = [torch.randn(100) for _ in range(10)]
    result = Krum(f=2, chunk_size=16).aggregate(gradients)
    assert result.shape == (100,)
    assert any(torch.equal(result, g) for g in gradients)  # Krum picks one input
    result = MultiKrum(f=2, q=5, chunk_size=16).aggregate(gradients)
    assert result.shape == (100,)
    result = CenteredClipping(c_tau=1.0, M=10, init="mean").aggregate(gradients)
    assert result.shape == (100,)


def test_attack_examples() -> None:
    from velocity.byzpy.attacks.empire import EmpireAttack

    grad1, grad2, grad3 = (torch.randn(50) for _ in range(3))
    attack = EmpireAttack(scale=-1.0)
    malicious_grad = attack.apply(honest_grads=[grad1, grad2, grad3])
    assert malicious_grad.shape == grad1.shape
    honest_grads = [torch.randn(100) for _ in range(5)]
    malicious = attack.apply(honest_grads=honest_grads)
    assert malicious.shape == (100,)
    # malicious is approximately -mean(honest_grads)
    assert torch.allclose(malicious, -torch.stack(honest_grads).mean(0), atol=1e-5)


def test_bucketing_examples() -> None:
    from velocity.byzpy.pre_aggregators.bucketing import Bucketing

    preagg = Bucketing(bucket_size=4)
    vectors = [torch.randn(100) for _ in range(10)]
    result = preagg.pre_aggregate(vectors)
    assert len(result) == 3  # 10 vectors -> ceil(10/4) = 3 buckets
    assert all(v.shape == (100,) for v in result)
    # the buckets' sizes are 4, 4, 2, so their weighted mean is the mean of the vectors
    total = 4 * result[0] + 4 * result[1] + 2 * result[2]
    assert torch.allclose(total / 10, torch.stack(vectors).mean(0), atol=1e-5)


# ---------------------------------------------------------------------- engine examples


def _honest_node_class() -> type:
    from velocity.byzpy.aggregators.coordinate_wise.median import CoordinateWiseMedian
    from velocity.byzpy.engine.node.base import HonestNode
    from velocity.byzpy.engine.node.mixin import P2PHonestMixin

    class Node(P2PHonestMixin, HonestNode):
        def __init__(self, seed: int) -> None:
            torch.manual_seed(seed)
            self.model = nn.Linear(3, 1)
            self.device = torch.device("cpu")
            self.criterion = nn.MSELoss()
            self.p2p_agg = CoordinateWiseMedian()
            g = torch.Generator().manual_seed(seed)
            self.x = torch.randn(16, 3, generator=g)
            self.y = self.x.sum(1, keepdim=True)

        def next_batch(self) -> tuple[Tensor, Tensor]:
            return self.x, self.y

        def honest_gradient(self, x: Tensor, y: Tensor) -> Tensor:
            self.model.zero_grad()
            self.criterion(self.model(x), y).backward()
            return torch.cat([p.grad.reshape(-1) for p in self.model.parameters()])  # type: ignore[union-attr]

        def apply_server_gradient(self, grad_vec: Tensor) -> None:
            with torch.no_grad():
                self.set_param_vector(self.get_param_vector() - 0.1 * grad_vec)

    return Node


def _byzantine_node_class() -> type:
    from velocity.byzpy.attacks.empire import EmpireAttack
    from velocity.byzpy.attacks.sign_flip import SignFlipAttack
    from velocity.byzpy.engine.node.base import ByzantineNode
    from velocity.byzpy.engine.node.mixin import P2PByzantineMixin

    class Byz(P2PByzantineMixin, ByzantineNode):
        def __init__(self) -> None:
            self.device = torch.device("cpu")
            self.attack = EmpireAttack(scale=-3.0)
            self.flip = SignFlipAttack()

        def next_batch(self) -> tuple[Tensor, Tensor]:
            return torch.empty(0), torch.empty(0)

        def byzantine_gradient(
            self, x: Tensor, y: Tensor, honest_grads: Sequence[Tensor] | None = None
        ) -> Tensor:
            return self.attack.apply(honest_grads=list(honest_grads or []))

        def apply_server_gradient(self, grad_vec: Tensor) -> None:
            pass

    return Byz


async def _actors(h: int, b: int) -> tuple[list[object], list[object]]:
    from velocity.byzpy.engine.node.actors import ByzantineNodeActor, HonestNodeActor

    honest = [await HonestNodeActor.spawn(_honest_node_class(), args=(i,)) for i in range(h)]
    byz = [await ByzantineNodeActor.spawn(_byzantine_node_class()) for _ in range(b)]
    return honest, byz  # type: ignore[return-value]


def test_parameter_server_example() -> None:
    from velocity.byzpy.engine.parameter_server.ps import ParameterServer

    async def main() -> Tensor:
        honest_actors, byz_actors = await _actors(6, 2)
        from velocity.byzpy.aggregators.geometric_wise.krum import MultiKrum

        aggregator = MultiKrum(f=2, q=5)
        ps = ParameterServer(
            honest_nodes=honest_actors,  # type: ignore[arg-type]
            byzantine_nodes=byz_actors,  # type: ignore[arg-type]
            aggregator=aggregator,
        )
        last = torch.zeros(4)
        for _ in range(20):
            last = await ps.round()
        await ps.shutdown()
        return last

    g = asyncio.run(main())
    assert g.shape == (4,)
    assert bool(torch.isfinite(g).all())
    # the models converge towards y = sum(x): the aggregated gradient becomes small
    assert float(g.norm()) < 1.0


def test_peer_to_peer_example() -> None:
    from velocity.byzpy.engine.peer_to_peer.topology import Topology
    from velocity.byzpy.engine.peer_to_peer.train import PeerToPeer

    async def main() -> list[float]:
        honest_actors, byz_actors = await _actors(4, 1)
        topology = Topology.ring(n=5, k=1)
        p2p = PeerToPeer(
            honest_nodes=honest_actors,  # type: ignore[arg-type]
            byzantine_nodes=byz_actors,  # type: ignore[arg-type]
            topology=topology,
            lr=0.01,
        )
        await p2p.bootstrap()
        for _ in range(100):
            await p2p.round()
        await p2p.shutdown()
        return [float(r["consensus_distance"]) for r in p2p.history]

    distances = asyncio.run(main())
    assert len(distances) == 100
    assert all(d == d for d in distances)  # finite-or-not, never NaN


def _aggregation_graph() -> object:
    from velocity.byzpy import CoordinateWiseMedian, make_single_operator_graph

    return make_single_operator_graph(
        node_name="aggregate", operator=CoordinateWiseMedian(), input_keys=("gradients",)
    )


def test_node_application_examples() -> None:
    from velocity.byzpy import EmpireAttack, make_single_operator_graph
    from velocity.byzpy.engine.graph.pool import ActorPoolConfig
    from velocity.byzpy.engine.node.application import (
        ByzantineNodeApplication,
        HonestNodeApplication,
        NodeApplication,
    )

    grads = [torch.randn(20) for _ in range(5)]
    grad1, grad2, grad3 = grads[:3]

    async def main() -> tuple[object, object, list[str]]:
        app = ByzantineNodeApplication(
            name="byz_node0", actor_pool=[ActorPoolConfig(backend="thread", count=1)]
        )
        # Register attack pipeline...
        app.register_pipeline(
            app.ATTACK_PIPELINE,
            make_single_operator_graph(
                node_name="attack", operator=EmpireAttack(), input_keys=("honest_grads",)
            ),
        )
        malicious_grad = await app.run_attack(inputs={"honest_grads": grads})
        await app.shutdown()
        honest = HonestNodeApplication(
            name="honest_node0", actor_pool=[ActorPoolConfig(backend="thread", count=2)]
        )
        # Register aggregation pipeline...
        honest.register_pipeline(honest.AGGREGATION_PIPELINE, _aggregation_graph())  # type: ignore[arg-type]
        result = await honest.aggregate(gradients=[grad1, grad2, grad3])
        await honest.shutdown()
        plain = NodeApplication(
            name="node0", actor_pool=[ActorPoolConfig(backend="thread", count=4)]
        )
        # Register and run pipelines...
        plain.register_pipeline("median", _aggregation_graph())  # type: ignore[arg-type]
        names = list(plain.list_pipelines())
        await plain.shutdown()
        return malicious_grad, result, names

    malicious_grad, result, names = asyncio.run(main())
    assert isinstance(malicious_grad, Tensor)
    assert torch.allclose(malicious_grad, -torch.stack(grads).mean(0), atol=1e-5)
    assert isinstance(result, Tensor)
    assert torch.equal(result, torch.stack([grad1, grad2, grad3]).median(0).values)
    assert names == ["median"]


def test_scheduler_examples() -> None:
    from velocity.byzpy.engine.graph.pool import ActorPool, ActorPoolConfig
    from velocity.byzpy.engine.graph.scheduler import MessageAwareNodeScheduler, NodeScheduler

    gradients = [torch.randn(30) for _ in range(7)]
    gradient_vector = torch.randn(30)

    async def main() -> tuple[dict[str, object], object]:
        graph = _aggregation_graph()
        pool = ActorPool([ActorPoolConfig(backend="thread", count=4)])
        scheduler = NodeScheduler(graph, pool=pool)  # type: ignore[arg-type]
        results = await scheduler.run({"gradients": gradients})
        messaging = MessageAwareNodeScheduler(graph, pool=pool)
        # In another task, deliver a message
        messaging.deliver_message("gradient", payload=gradient_vector)
        # In graph execution, wait for message
        message = await messaging.wait_for_message("gradient")
        await pool.shutdown()
        return results, message

    results, message = asyncio.run(main())
    assert torch.equal(results["aggregate"], torch.stack(gradients).median(0).values)  # type: ignore[arg-type]
    assert message is gradient_vector


def test_actor_pool_examples() -> None:
    from velocity.byzpy.engine.graph.pool import ActorPool, ActorPoolConfig

    async def main() -> int:
        config = ActorPoolConfig(backend="thread", count=4, name="cpu-workers")
        pool = ActorPool([config])
        await pool.start()
        size = pool.size
        await pool.shutdown()
        return size

    assert asyncio.run(main()) == 4

    async def with_gpu() -> None:
        configs = [
            ActorPoolConfig(backend="thread", count=4),
            ActorPoolConfig(backend="gpu", count=2),
        ]
        pool = ActorPool(configs)
        await pool.start()
        await pool.shutdown()

    with pytest.raises(ConfigurationError, match="thread"):
        asyncio.run(with_gpu())


def test_resolve_backend_examples() -> None:
    from velocity.byzpy.engine.actor.backends.thread import ThreadActorBackend
    from velocity.byzpy.engine.actor.factory import resolve_backend

    backend = resolve_backend("thread")
    assert isinstance(backend, ThreadActorBackend)
    with pytest.raises(ConfigurationError, match="thread"):
        resolve_backend("tcp://localhost:29000")
