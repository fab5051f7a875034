"""``NodeApplication`` and its honest / Byzantine variants."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import cast

import pytest
import torch
from torch import Tensor

from velocity.byzpy.engine.graph.graph import ComputationGraph, GraphNode, graph_input
from velocity.byzpy.engine.graph.operator import OpContext, Operator
from velocity.byzpy.engine.graph.ops import CallableOp, make_single_operator_graph
from velocity.byzpy.engine.graph.pool import ActorPool, ActorPoolConfig
from velocity.byzpy.engine.graph.subtask import SubTask
from velocity.byzpy.engine.node.application import (
    ByzantineNodeApplication,
    HonestNodeApplication,
    NodeApplication,
    NodePipeline,
)


def _mean_block(block: Tensor) -> tuple[Tensor, str]:
    return block.mean(dim=0), threading.current_thread().name


class ChunkedMean(Operator):
    name = "chunked_mean"
    supports_subtasks = True

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.contexts: list[OpContext] = []

    def compute(self, inputs: Mapping[str, object], *, context: OpContext) -> object:
        self.contexts.append(context)
        return torch.stack(list(inputs["gradients"])).mean(dim=0)  # type: ignore[call-overload]

    def create_subtasks(
        self, inputs: Mapping[str, object], *, context: OpContext
    ) -> Iterable[SubTask]:
        self.contexts.append(context)
        stacked = torch.stack(list(inputs["gradients"]))  # type: ignore[call-overload]
        return [SubTask(fn=_mean_block, args=(b,)) for b in torch.split(stacked, 4, dim=1)]

    def reduce_subtasks(
        self, partials: Sequence[object], inputs: Mapping[str, object], *, context: OpContext
    ) -> object:
        pairs = cast(Sequence[tuple[Tensor, str]], partials)
        self.threads = [name for _, name in pairs]
        return torch.cat([p for p, _ in pairs])


class Recorder(Operator):
    def compute(self, inputs: Mapping[str, object], *, context: OpContext) -> object:
        return dict(context.metadata or {})


def _grads() -> list[Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(10, generator=g) for _ in range(5)]


def test_register_list_and_run_pipelines() -> None:
    app = NodeApplication(name="node0", actor_pool=[ActorPoolConfig(backend="thread", count=4)])
    assert isinstance(app.pool, ActorPool)
    assert app.pool.size == 4
    inc = CallableOp(lambda x: x + 1, input_mapping={"x": "x"})
    app.register_pipeline(
        "inc", make_single_operator_graph(node_name="out", operator=inc, input_keys=["x"])
    )
    app.register_pipeline(
        "rec", make_single_operator_graph(node_name="m", operator=Recorder(), input_keys=[])
    )
    assert app.has_pipeline("inc")
    assert not app.has_pipeline("dec")
    assert list(app.list_pipelines()) == ["inc", "rec"]
    assert asyncio.run(app.run_pipeline("inc", {"x": 1})) == {"out": 2}
    assert app.run_pipeline_sync("inc", {"x": 41}) == {"out": 42}
    with pytest.raises(KeyError, match=r"no pipeline 'dec'; registered: \['inc', 'rec'\]"):
        asyncio.run(app.run_pipeline("dec", {}))
    with pytest.raises(KeyError, match="registered"):
        app.run_pipeline_sync("dec", {})
    with pytest.raises(ValueError, match="already registered"):
        app.register_pipeline(
            "inc", make_single_operator_graph(node_name="o", operator=inc, input_keys=["x"])
        )
    with pytest.raises(TypeError, match="ComputationGraph"):
        app.register_pipeline("x", "graph")  # type: ignore[arg-type]
    asyncio.run(app.shutdown())


def test_metadata_is_merged_app_then_pipeline_then_call() -> None:
    app = NodeApplication(
        name="n1",
        actor_pool=[ActorPoolConfig("thread", name="w")],
        metadata={"a": 1, "b": 1, "c": 1},
    )
    graph = make_single_operator_graph(node_name="m", operator=Recorder(), input_keys=[])
    app.register_pipeline("rec", graph, metadata={"b": 2, "c": 2})
    meta = app.run_pipeline_sync("rec", {}, metadata={"c": 3})["m"]
    assert meta["node"] == "n1"
    assert meta["pipeline"] == "rec"
    assert (meta["a"], meta["b"], meta["c"]) == (1, 2, 3)
    assert meta["pool_size"] == 1
    assert meta["worker_affinities"] == ("worker::w-0",)
    asyncio.run(app.shutdown())


def test_an_existing_pool_is_used_as_is() -> None:
    pool = ActorPool([ActorPoolConfig("thread", count=2)])
    app = NodeApplication(name="n", actor_pool=pool)
    assert app.pool is pool
    with pytest.raises(ValueError, match="non-empty str"):
        NodeApplication(name="", actor_pool=pool)
    with pytest.raises(ValueError, match="non-empty sequence"):
        NodeApplication(name="n", actor_pool=[])


def test_sync_helpers_refuse_to_block_a_running_loop() -> None:
    app = NodeApplication(name="n", actor_pool=[ActorPoolConfig("thread")])
    app.register_pipeline(
        "inc",
        make_single_operator_graph(
            node_name="o",
            operator=CallableOp(lambda x: x + 1, input_mapping={"x": "x"}),
            input_keys=["x"],
        ),
    )

    async def inside() -> dict[str, object]:
        with pytest.raises(RuntimeError, match="running event loop"):
            app.run_pipeline_sync("inc", {"x": 1})
        return await app.run_pipeline("inc", {"x": 1})

    assert asyncio.run(inside()) == {"o": 2}
    asyncio.run(app.shutdown())


def test_honest_application_aggregates_over_its_pool() -> None:
    grads = _grads()
    op = ChunkedMean()
    app = HonestNodeApplication(
        name="honest_node0", actor_pool=[ActorPoolConfig(backend="thread", count=2)]
    )
    assert (app.AGGREGATION_PIPELINE, app.GRADIENT_PIPELINE) == ("aggregate", "honest_gradient")
    with pytest.raises(KeyError, match="no aggregation pipeline"):
        app.aggregate_sync(gradients=grads)
    app.register_pipeline(
        app.AGGREGATION_PIPELINE,
        make_single_operator_graph(node_name="agg", operator=op, input_keys=["gradients"]),
    )

    async def main() -> Tensor:
        result = await app.aggregate(gradients=grads, metadata={"round": 3})
        return result  # type: ignore[no-any-return]

    result = asyncio.run(main())
    assert torch.allclose(result, torch.stack(grads).mean(dim=0))
    assert len(op.threads) == 3
    assert len(set(op.threads)) == 2
    assert op.contexts[-1].metadata["round"] == 3  # type: ignore[index]
    assert op.contexts[-1].metadata["pipeline"] == "aggregate"  # type: ignore[index]
    assert torch.allclose(app.aggregate_sync(gradients=grads), result)
    asyncio.run(app.shutdown())


def test_honest_gradient_pipeline() -> None:
    app = HonestNodeApplication(name="h", actor_pool=[ActorPoolConfig("thread")])
    with pytest.raises(KeyError, match="no honest gradient pipeline"):
        asyncio.run(app.honest_gradient({"x": 1}))
    graph = ComputationGraph(
        [
            GraphNode(
                "sq", CallableOp(lambda x: x * x, input_mapping={"x": "x"}), {"x": graph_input("x")}
            ),
            GraphNode("neg", CallableOp(lambda v: -v, input_mapping={"v": "v"}), {"v": "sq"}),
        ]
    )
    app.register_pipeline(app.GRADIENT_PIPELINE, graph)
    assert asyncio.run(app.honest_gradient({"x": torch.tensor([2.0])})).item() == -4.0
    assert app.honest_gradient_sync({"x": torch.tensor([3.0])}).item() == -9.0
    asyncio.run(app.shutdown())


def test_byzantine_application_seed_example() -> None:
    app = ByzantineNodeApplication(
        name="byz_node0", actor_pool=[ActorPoolConfig(backend="thread", count=1)]
    )
    assert app.ATTACK_PIPELINE == "attack"
    grads = _grads()
    with pytest.raises(KeyError, match="no attack pipeline"):
        app.run_attack_sync(inputs={"honest_grads": grads})
    flip = CallableOp(
        lambda honest_grads: -torch.stack(honest_grads).mean(dim=0),
        input_mapping={"honest_grads": "honest_grads"},
    )
    app.register_pipeline(
        app.ATTACK_PIPELINE,
        make_single_operator_graph(node_name="attack", operator=flip, input_keys=["honest_grads"]),
    )

    async def main() -> Tensor:
        malicious_grad = await app.run_attack(inputs={"honest_grads": grads})
        await app.shutdown()
        return malicious_grad  # type: ignore[no-any-return]

    expected = -torch.stack(grads).mean(dim=0)
    assert torch.equal(asyncio.run(main()), expected)
    assert torch.equal(app.run_attack_sync(inputs={"honest_grads": grads}), expected)
    asyncio.run(app.shutdown())


def test_node_pipeline_is_a_frozen_record() -> None:
    graph = make_single_operator_graph(node_name="m", operator=Recorder(), input_keys=[])
    p = NodePipeline(graph)
    assert p.graph is graph
    assert p.metadata is None
    with pytest.raises(AttributeError):
        p.metadata = {}  # type: ignore[misc]
