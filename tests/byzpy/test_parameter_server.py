"""``velocity.byzpy``'s asynchronous ParameterServer: ByzPy's round on the round engine.

The reference is a hand-written loop of what ByzPy's ``ParameterServer.round`` does: gather
the honest gradients, let each Byzantine node craft from them, aggregate, apply to the
honest nodes. The server must give bit-identical models (float32 nodes, so the engine's
float32 stack is exact).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor, nn

from velocity.byzpy.engine.graph.pool import ActorPool, ActorPoolConfig
from velocity.byzpy.engine.node.actors import ByzantineNodeActor, HonestNodeActor
from velocity.byzpy.engine.node.base import ByzantineNode, HonestNode
from velocity.byzpy.engine.parameter_server import ParameterServer
from velocity.errors import ConfigurationError, ProtocolError, ValidationError

D_IN = 5


def _data(seed: int, n: int = 64) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D_IN, generator=g)
    w = torch.arange(1.0, D_IN + 1)
    y = x @ w + 0.1 * torch.randn(n, generator=g)
    return x, y


class LinearNode(HonestNode):
    """A least-squares node: model ``nn.Linear(D_IN, 1)``, SGD step on the aggregate."""

    def __init__(self, seed: int, lr: float = 0.05, batch: int = 8) -> None:
        torch.manual_seed(0)
        self.model = nn.Linear(D_IN, 1)
        self.x, self.y = _data(seed)
        self.lr = lr
        self.batch = batch
        self.cursor = 0
        self.applied: list[Tensor] = []

    def next_batch(self) -> tuple[Tensor, Tensor]:
        lo = self.cursor
        self.cursor = (self.cursor + self.batch) % len(self.x)
        return self.x[lo : lo + self.batch], self.y[lo : lo + self.batch]

    def honest_gradient(self, x: Tensor, y: Tensor) -> Tensor:
        self.model.zero_grad()
        loss = ((self.model(x).squeeze(-1) - y) ** 2).mean()
        loss.backward()
        return torch.cat([p.grad.reshape(-1) for p in self.model.parameters()])  # type: ignore[union-attr]

    def apply_server_gradient(self, grad_vec: Tensor) -> None:
        self.applied.append(grad_vec.clone())
        offset = 0
        with torch.no_grad():
            for p in self.model.parameters():
                k = p.numel()
                p.add_(grad_vec[offset : offset + k].view_as(p), alpha=-self.lr)
                offset += k

    def params(self) -> Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.model.parameters()])


class FlipNode(ByzantineNode):
    """Sends minus ``scale`` times the sum of the honest gradients it is shown."""

    def __init__(self, scale: float = 3.0) -> None:
        self.scale = scale
        self.seen: list[int] = []
        self.applied = 0

    def next_batch(self) -> tuple[Tensor, Tensor]:
        return torch.empty(0), torch.empty(0)

    def byzantine_gradient(
        self, x: Tensor, y: Tensor, honest_grads: Sequence[Tensor] | None = None
    ) -> Tensor:
        assert honest_grads is not None
        self.seen.append(len(honest_grads))
        return -self.scale * torch.stack(list(honest_grads)).sum(0)

    def apply_server_gradient(self, grad_vec: Tensor) -> None:
        self.applied += 1


class Mean:
    """A ByzPy-style aggregator (duck-typed): the mean."""

    def aggregate(self, gradients: Sequence[Tensor]) -> Tensor:
        return torch.stack(list(gradients)).mean(0)


class CoordinateMedian:
    def aggregate(self, gradients: Sequence[Tensor]) -> Tensor:
        return torch.stack(list(gradients)).median(0).values


def _reference(rounds: int, n_honest: int, n_byz: int, agg: object) -> list[Tensor]:
    honest = [LinearNode(seed=i) for i in range(n_honest)]
    byz = [FlipNode() for _ in range(n_byz)]
    for _ in range(rounds):
        grads = [node.honest_gradient_for_next_batch() for node in honest]
        crafted = [b.byzantine_gradient_for_next_batch(grads) for b in byz]
        g = agg.aggregate([*grads, *crafted])  # type: ignore[attr-defined]
        for node in honest:
            node.apply_server_gradient(g)
    return [node.params() for node in honest]


async def _run_server(
    rounds: int,
    n_honest: int,
    n_byz: int,
    agg: object,
    *,
    actors: bool,
    update_byzantines: bool = False,
    pool: ActorPool | None = None,
) -> tuple[ParameterServer, list[LinearNode], list[FlipNode], list[Tensor]]:
    if actors:
        h_actors = [
            await HonestNodeActor.spawn(LinearNode, kwargs={"seed": i}) for i in range(n_honest)
        ]
        b_actors = [await ByzantineNodeActor.spawn(FlipNode) for _ in range(n_byz)]
        honest = [a.node for a in h_actors]
        byz = [a.node for a in b_actors]
        ps = ParameterServer(
            h_actors, b_actors, agg, update_byzantines=update_byzantines, actor_pool=pool
        )
    else:
        honest = [LinearNode(seed=i) for i in range(n_honest)]
        byz = [FlipNode() for _ in range(n_byz)]
        ps = ParameterServer(honest, byz, agg, update_byzantines=update_byzantines, actor_pool=pool)
    outs = [await ps.round() for _ in range(rounds)]
    await ps.shutdown()
    return ps, honest, byz, outs  # type: ignore[return-value]


@pytest.mark.parametrize("actors", [True, False])
@pytest.mark.parametrize("agg", [Mean(), CoordinateMedian()], ids=["mean", "median"])
def test_matches_the_byzpy_round_bit_for_bit(actors: bool, agg: object) -> None:
    rounds = 6
    want = _reference(rounds, 4, 2, agg)
    ps, honest, byz, outs = asyncio.run(_run_server(rounds, 4, 2, agg, actors=actors))
    for got, ref in zip((n.params() for n in honest), want, strict=True):
        assert torch.equal(got, ref)
    assert ps.round_count == rounds
    assert all(b.seen == [4] * rounds for b in byz)
    assert all(b.applied == 0 for b in byz)  # update_byzantines=False
    # the returned aggregate is what every honest node applied, in the gradients' dtype
    for r, g in enumerate(outs):
        assert g.dtype == torch.float32
        assert g.shape == (D_IN + 1,)
        for node in honest:
            assert torch.equal(node.applied[r], g)


def test_history_is_one_round_result_per_round_in_node_order() -> None:
    ps, _, _, _ = asyncio.run(_run_server(3, 3, 1, Mean(), actors=True))
    assert len(ps.history) == 3
    first = ps.history[0]
    assert list(first["participated"]) == ["client-0", "client-1", "client-2", "client-3"]  # type: ignore[call-overload]


def test_update_byzantines_sends_the_aggregate_to_byzantine_nodes() -> None:
    _, _, byz, _ = asyncio.run(_run_server(3, 3, 2, Mean(), actors=True, update_byzantines=True))
    assert [b.applied for b in byz] == [3, 3]


def test_attack_moves_the_mean_but_not_the_median() -> None:
    # Mean with a flipping node diverges from the honest-only run; the median stays close.
    clean = _reference(5, 5, 0, Mean())
    _, mean_nodes, _, _ = asyncio.run(_run_server(5, 5, 2, Mean(), actors=False))
    _, med_nodes, _, _ = asyncio.run(_run_server(5, 5, 2, CoordinateMedian(), actors=False))
    mean_err = (mean_nodes[0].params() - clean[0]).norm()
    med_err = (med_nodes[0].params() - clean[0]).norm()
    assert med_err < 0.5 * mean_err


def test_actor_pool_path_gives_the_same_models() -> None:
    want = _reference(4, 3, 1, Mean())

    async def main() -> list[Tensor]:
        pool = ActorPool([ActorPoolConfig(backend="thread", count=2)])
        await pool.start()
        try:
            _, honest, _, _ = await _run_server(4, 3, 1, Mean(), actors=True, pool=pool)
        finally:
            await pool.shutdown()
        return [n.params() for n in honest]

    for got, ref in zip(asyncio.run(main()), want, strict=True):
        assert torch.equal(got, ref)


def test_round_after_shutdown_is_refused() -> None:
    async def main() -> None:
        ps = ParameterServer([LinearNode(0)], [], Mean())
        await ps.round()
        await ps.shutdown()
        await ps.shutdown()  # idempotent
        with pytest.raises(ProtocolError, match="shut down"):
            await ps.round()

    asyncio.run(main())


def test_bad_configuration_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigurationError, match="honest_nodes is empty"):
        ParameterServer([], [], Mean())
    with pytest.raises(ConfigurationError, match="aggregator"):
        ParameterServer([LinearNode(0)], [], object())
    with pytest.raises(ConfigurationError, match="pre_aggregator"):
        ParameterServer([LinearNode(0)], [], Mean(), pre_aggregator=object())
    with pytest.raises(ConfigurationError, match=r"honest_nodes\[1\]"):
        ParameterServer([LinearNode(0), FlipNode()], [], Mean())  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="byzantine_nodes"):
        ParameterServer([LinearNode(0)], [LinearNode(1)], Mean())  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="update_byzantines"):
        ParameterServer([LinearNode(0)], [], Mean(), update_byzantines="yes")  # type: ignore[arg-type]


class WrongLength(LinearNode):
    def honest_gradient(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.zeros(3)


def test_a_gradient_of_the_wrong_length_names_the_node() -> None:
    async def main() -> None:
        ps = ParameterServer([LinearNode(0), WrongLength(1)], [], Mean())
        with pytest.raises(ValidationError, match=r"honest_nodes\[1\].*6 entries"):
            await ps.round()
        await ps.shutdown()

    asyncio.run(main())


def test_concurrent_rounds_run_one_after_the_other() -> None:
    want = _reference(4, 3, 1, Mean())

    async def main() -> tuple[ParameterServer, list[LinearNode]]:
        honest = [LinearNode(seed=i) for i in range(3)]
        ps = ParameterServer(honest, [FlipNode()], Mean())
        await asyncio.gather(ps.round(), ps.round())
        await asyncio.gather(ps.round(), ps.round())
        await ps.shutdown()
        return ps, honest

    ps, honest = asyncio.run(main())
    assert ps.round_count == 4
    for node, ref in zip(honest, want, strict=True):
        assert torch.equal(node.params(), ref)


class SlowNode(LinearNode):
    def honest_gradient(self, x: Tensor, y: Tensor) -> Tensor:
        import time

        time.sleep(0.2)
        return super().honest_gradient(x, y)


def test_a_cancelled_round_still_finishes_in_step() -> None:
    async def main() -> tuple[ParameterServer, SlowNode]:
        node = SlowNode(seed=0)
        ps = ParameterServer([node], [], Mean())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ps.round(), 0.05)
        # the round completed: the engine counted it and the node applied its aggregate
        assert ps.round_count == 1
        assert len(node.applied) == 1
        await ps.round()
        await ps.shutdown()
        return ps, node

    ps, node = asyncio.run(main())
    assert ps.round_count == 2
    assert len(node.applied) == 2


class Exploding:
    def __init__(self) -> None:
        self.calls = 0

    def aggregate(self, gradients: Sequence[Tensor]) -> Tensor:
        self.calls += 1
        if self.calls == 2:
            raise ArithmeticError("aggregator failed")
        return torch.stack(list(gradients)).mean(0)


def test_an_aggregator_error_propagates_and_the_round_is_not_counted() -> None:
    async def main() -> ParameterServer:
        ps = ParameterServer([LinearNode(0), LinearNode(1)], [], Exploding())
        await ps.round()
        with pytest.raises(ArithmeticError, match="aggregator failed"):
            await ps.round()
        assert ps.round_count == 1
        await ps.round()  # the server goes on
        await ps.shutdown()
        return ps

    assert asyncio.run(main()).round_count == 2


class WrongShape:
    def aggregate(self, gradients: Sequence[Tensor]) -> Tensor:
        return torch.zeros(2)


class Empty:
    def pre_aggregate(self, xs: Sequence[Tensor]) -> list[Tensor]:
        return []


def test_bad_aggregator_outputs_name_the_culprit() -> None:
    async def main(agg: object, pre: object | None) -> None:
        ps = ParameterServer([LinearNode(0), LinearNode(1)], [], agg, pre_aggregator=pre)
        try:
            await ps.round()
        finally:
            await ps.shutdown()

    with pytest.raises(ValidationError, match=r"aggregator\.aggregate\(\).*6 entries"):
        asyncio.run(main(WrongShape(), None))
    with pytest.raises(ValidationError, match=r"pre_aggregator\.pre_aggregate\(\).*non-empty"):
        asyncio.run(main(Mean(), Empty()))
