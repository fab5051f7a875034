"""``NodeScheduler`` and ``MessageAwareNodeScheduler``: evaluation, fan-out, messages."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import cast

import pytest
import torch
from torch import Tensor

from velocity.byzpy.engine.graph.graph import ComputationGraph, GraphNode, graph_input
from velocity.byzpy.engine.graph.operator import OpContext, Operator, SubtaskRunner
from velocity.byzpy.engine.graph.ops import CallableOp, make_single_operator_graph
from velocity.byzpy.engine.graph.pool import ActorPool, ActorPoolConfig
from velocity.byzpy.engine.graph.scheduler import (
    MessageAwareNodeScheduler,
    MessageSource,
    MessageTriggerOp,
    NodeScheduler,
)
from velocity.byzpy.engine.graph.subtask import SubTask


class Add(Operator):
    name = "add"

    def compute(self, inputs: Mapping[str, object], *, context: OpContext) -> object:
        return inputs["a"] + inputs["b"]  # type: ignore[operator]


class Recorder(Operator):
    """Returns its context (to check what the scheduler passes)."""

    def compute(self, inputs: Mapping[str, object], *, context: OpContext) -> object:
        return context


def _chunk_median(block: Tensor) -> tuple[Tensor, str]:
    return block.median(dim=0).values, threading.current_thread().name


class ChunkedMedian(Operator):
    """Coordinate-wise median; with subtasks, one per block of ``chunk`` columns."""

    name = "chunked_median"
    supports_subtasks = True

    def __init__(self, chunk: int) -> None:
        self.chunk = chunk
        self.threads: list[str] = []

    def compute(self, inputs: Mapping[str, object], *, context: OpContext) -> object:
        return torch.stack(list(inputs["gradients"])).median(dim=0).values  # type: ignore[call-overload]

    def create_subtasks(
        self, inputs: Mapping[str, object], *, context: OpContext
    ) -> Iterable[SubTask]:
        stacked = torch.stack(list(inputs["gradients"]))  # type: ignore[call-overload]
        for a in range(0, stacked.shape[1], self.chunk):
            yield SubTask(fn=_chunk_median, args=(stacked[:, a : a + self.chunk],))

    def reduce_subtasks(
        self, partials: Sequence[object], inputs: Mapping[str, object], *, context: OpContext
    ) -> object:
        pairs = cast(Sequence[tuple[Tensor, str]], partials)
        self.threads = [name for _, name in pairs]
        return torch.cat([part for part, _ in pairs])


def _gradients() -> list[Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(103, generator=g) for _ in range(7)]


def test_a_diamond_graph_computes_what_the_formula_says() -> None:
    graph = ComputationGraph(
        [
            GraphNode("left", Add(), {"a": graph_input("x"), "b": graph_input("y")}),
            GraphNode("right", Add(), {"a": graph_input("x"), "b": graph_input("x")}),
            GraphNode("join", Add(), {"a": "left", "b": "right"}),
        ],
        outputs=["join", "left"],
    )
    out = asyncio.run(NodeScheduler(graph).run({"x": 3, "y": 10, "extra": "ignored"}))
    assert out == {"join": (3 + 10) + (3 + 3), "left": 13}


def test_missing_inputs_are_named() -> None:
    graph = ComputationGraph(
        [GraphNode("s", Add(), {"a": graph_input("x"), "b": graph_input("y")})]
    )
    with pytest.raises(ValueError, match=r"missing graph inputs \['y'\]"):
        asyncio.run(NodeScheduler(graph).run({"x": 1}))
    with pytest.raises(TypeError, match="mapping"):
        asyncio.run(NodeScheduler(graph).run([1, 2]))  # type: ignore[arg-type]


def test_constructor_checks_its_arguments() -> None:
    graph = make_single_operator_graph(node_name="r", operator=Recorder(), input_keys=[])
    with pytest.raises(TypeError, match="ComputationGraph"):
        NodeScheduler("graph")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ActorPool"):
        NodeScheduler(graph, pool="thread")  # type: ignore[arg-type]


def test_operators_get_the_node_name_and_metadata() -> None:
    graph = make_single_operator_graph(node_name="rec", operator=Recorder(), input_keys=[])
    ctx = asyncio.run(NodeScheduler(graph, metadata={"node": "n0"}).run({}))["rec"]
    assert ctx.node_name == "rec"
    assert dict(ctx.metadata) == {"node": "n0"}
    pool = ActorPool([ActorPoolConfig("thread", count=2, name="w")])
    ctx = asyncio.run(NodeScheduler(graph, pool=pool, metadata={"node": "n0"}).run({}))["rec"]
    assert ctx.metadata["pool_size"] == 2
    assert ctx.metadata["worker_affinities"] == ("worker::w-0", "worker::w-1")
    assert ctx.metadata["node"] == "n0"
    asyncio.run(pool.shutdown())


@pytest.mark.parametrize("workers", [2, 4])
def test_subtask_fan_out_equals_the_single_thread_result(workers: int) -> None:
    gradients = _gradients()
    op = ChunkedMedian(chunk=10)
    graph = make_single_operator_graph(node_name="agg", operator=op, input_keys=["gradients"])
    reference = asyncio.run(NodeScheduler(graph).run({"gradients": gradients}))["agg"]
    assert torch.equal(reference, torch.stack(gradients).median(dim=0).values)
    assert op.threads == []  # no pool: compute() ran, no subtasks

    async def main() -> Tensor:
        pool = ActorPool([ActorPoolConfig(backend="thread", count=workers)])
        try:
            results = await NodeScheduler(graph, pool=pool).run({"gradients": gradients})
        finally:
            await pool.shutdown()
        return results["agg"]  # type: ignore[no-any-return]

    fanned = asyncio.run(main())
    assert torch.equal(fanned, reference)
    assert len(op.threads) == 11  # ceil(103 / 10) subtasks
    assert len(set(op.threads)) == workers  # pinned round-robin over every worker
    assert threading.current_thread().name not in op.threads


def test_a_one_worker_pool_runs_compute() -> None:
    op = ChunkedMedian(chunk=10)
    graph = make_single_operator_graph(node_name="agg", operator=op, input_keys=["gradients"])

    async def main() -> object:
        async with ActorPool([ActorPoolConfig("thread")]) as pool:
            return (await NodeScheduler(graph, pool=pool).run({"gradients": _gradients()}))["agg"]

    assert torch.equal(asyncio.run(main()), torch.stack(_gradients()).median(dim=0).values)  # type: ignore[arg-type]
    assert op.threads == []


class Handshake(Operator):
    """Sets its own event, then waits for the other's: deadlocks unless run concurrently."""

    def __init__(self, mine: str, theirs: str, events: dict[str, asyncio.Event]) -> None:
        self.mine, self.theirs, self.events = mine, theirs, events

    async def run(
        self, inputs: Mapping[str, object], *, context: OpContext, pool: SubtaskRunner | None = None
    ) -> object:
        self.events[self.mine].set()
        await asyncio.wait_for(self.events[self.theirs].wait(), timeout=5)
        return self.mine


def test_independent_nodes_run_concurrently() -> None:
    async def main() -> dict[str, object]:
        events = {"a": asyncio.Event(), "b": asyncio.Event()}
        graph = ComputationGraph(
            [
                GraphNode("a", Handshake("a", "b", events), {}),
                GraphNode("b", Handshake("b", "a", events), {}),
                GraphNode(
                    "both",
                    CallableOp(lambda a, b: a + b, input_mapping={"a": "a", "b": "b"}),
                    {"a": "a", "b": "b"},
                ),
            ]
        )
        return await NodeScheduler(graph).run({})

    assert asyncio.run(main())["both"] == "ab"


def test_the_first_failure_is_raised_and_the_rest_cancelled() -> None:
    ran: list[str] = []

    def fail(x: object) -> object:
        raise ArithmeticError("node failed")

    def after(v: object) -> object:
        ran.append("after")
        return v

    graph = ComputationGraph(
        [
            GraphNode("bad", CallableOp(fail, input_mapping={"x": "x"}), {"x": graph_input("x")}),
            GraphNode("after", CallableOp(after, input_mapping={"v": "v"}), {"v": "bad"}),
        ]
    )
    with pytest.raises(ArithmeticError, match="node failed"):
        asyncio.run(NodeScheduler(graph).run({"x": 1}))
    assert ran == []


def test_seed_example_with_a_pool() -> None:
    gradients = _gradients()
    graph = make_single_operator_graph(
        node_name="agg", operator=ChunkedMedian(chunk=25), input_keys=["gradients"]
    )

    async def main() -> dict[str, object]:
        pool = ActorPool([ActorPoolConfig(backend="thread", count=4)])
        scheduler = NodeScheduler(graph, pool=pool)
        results = await scheduler.run({"gradients": gradients})
        await pool.shutdown()
        return results

    results = asyncio.run(main())
    assert list(results) == ["agg"]
    assert torch.equal(results["agg"], torch.stack(gradients).median(dim=0).values)  # type: ignore[arg-type]


def test_a_plain_scheduler_refuses_message_inputs() -> None:
    graph = ComputationGraph(
        [GraphNode("m", Add(), {"a": MessageSource("g"), "b": graph_input("b")})]
    )
    with pytest.raises(TypeError, match="MessageAwareNodeScheduler"):
        asyncio.run(NodeScheduler(graph).run({"b": 1}))


# -- messages ------------------------------------------------------------------------------


def _noop_graph() -> ComputationGraph:
    return make_single_operator_graph(node_name="noop", operator=Recorder(), input_keys=[])


def test_message_scheduler_is_a_node_scheduler() -> None:
    graph = _noop_graph()
    s = MessageAwareNodeScheduler(graph, metadata={"k": 1})
    assert isinstance(s, NodeScheduler)
    assert s.graph is graph
    assert s.metadata == {"k": 1}


def test_a_cached_message_is_returned_at_once_in_fifo_order() -> None:
    async def main() -> None:
        s = MessageAwareNodeScheduler(_noop_graph())
        for k in range(3):
            s.deliver_message("m", {"seq": k})
        assert [(await s.wait_for_message("m"))["seq"] for _ in range(3)] == [0, 1, 2]
        with pytest.raises(asyncio.TimeoutError):
            await s.wait_for_message("m", timeout=0.05)  # consumed once

    asyncio.run(main())


def test_waiting_blocks_until_delivery_and_wakes_every_waiter() -> None:
    async def main() -> None:
        s = MessageAwareNodeScheduler(_noop_graph())
        waiters = [asyncio.ensure_future(s.wait_for_message("m")) for _ in range(4)]
        other = asyncio.ensure_future(s.wait_for_message("other", timeout=0.05))
        await asyncio.sleep(0.01)
        assert not any(w.done() for w in waiters)
        s.deliver_message("m", 42)
        assert await asyncio.gather(*waiters) == [42, 42, 42, 42]
        with pytest.raises(asyncio.TimeoutError):
            await other  # types are independent
        with pytest.raises(asyncio.TimeoutError):
            await s.wait_for_message("m", timeout=0.05)  # handed to the waiters, not cached

    asyncio.run(main())


def test_timeout_leaves_no_stale_waiter() -> None:
    async def main() -> None:
        s = MessageAwareNodeScheduler(_noop_graph())
        with pytest.raises(asyncio.TimeoutError, match="no 'm' message"):
            await s.wait_for_message("m", timeout=0.05)
        s.deliver_message("m", "late")  # nobody waits any more: cached
        assert await s.wait_for_message("m", timeout=0.05) == "late"
        with pytest.raises(ValueError, match="timeout"):
            await s.wait_for_message("m", timeout=-1)
        with pytest.raises(ValueError, match="message_type"):
            s.deliver_message("", 1)

    asyncio.run(main())


def test_delivery_from_another_thread_wakes_the_waiter() -> None:
    async def main() -> object:
        s = MessageAwareNodeScheduler(_noop_graph())
        waiting = asyncio.ensure_future(s.wait_for_message("g", timeout=10))
        await asyncio.sleep(0.01)
        t = threading.Thread(target=s.deliver_message, args=("g", "from a thread"))
        t.start()
        result = await waiting
        t.join()
        return result

    assert asyncio.run(main()) == "from a thread"


def test_message_sources_in_run_inputs_and_node_inputs() -> None:
    graph = ComputationGraph(
        [
            GraphNode(
                "s", Add(), {"a": graph_input("x"), "b": MessageSource("bias", field="value")}
            ),
        ]
    )

    async def main() -> dict[str, object]:
        s = MessageAwareNodeScheduler(graph)
        s.deliver_message("vec", {"payload": 5, "other": 0})
        s.deliver_message("bias", {"value": 100})
        return await s.run({"x": MessageSource("vec", field="payload")})

    assert asyncio.run(main()) == {"s": 105}


def test_message_field_errors() -> None:
    graph = make_single_operator_graph(
        node_name="d", operator=CallableOp(lambda x: x, input_mapping={"x": "x"}), input_keys=["x"]
    )

    async def run_with(payload: object, source: MessageSource) -> object:
        s = MessageAwareNodeScheduler(graph)
        s.deliver_message("m", payload)
        return await s.run({"x": source})

    assert asyncio.run(run_with([1, 2], MessageSource("m"))) == {"d": [1, 2]}
    with pytest.raises(KeyError, match="field 'v' not in the payload"):
        asyncio.run(run_with({"w": 1}, MessageSource("m", field="v")))
    with pytest.raises(TypeError, match="mapping is needed"):
        asyncio.run(run_with([1], MessageSource("m", field="v")))
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(MessageAwareNodeScheduler(graph).run({"x": MessageSource("m", timeout=0.05)}))
    with pytest.raises(ValueError, match="timeout"):
        MessageSource("m", timeout=float("nan"))


def test_message_trigger_op_waits_for_its_message() -> None:
    graph = ComputationGraph(
        [
            GraphNode("trigger", MessageTriggerOp("go", timeout=5), {}),
            GraphNode("plus", Add(), {"a": "trigger", "b": graph_input("b")}),
        ]
    )

    async def main() -> dict[str, object]:
        s = MessageAwareNodeScheduler(graph)
        running = asyncio.ensure_future(s.run({"b": 1}))
        await asyncio.sleep(0.01)
        assert not running.done()
        s.deliver_message("go", 41)
        return await running

    assert asyncio.run(main()) == {"plus": 42}
    op = MessageTriggerOp("go")
    assert op.name == "message_trigger_go"
    with pytest.raises(RuntimeError, match="MessageAwareNodeScheduler"):
        asyncio.run(NodeScheduler(ComputationGraph([GraphNode("t", op, {})])).run({}))
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(
            MessageAwareNodeScheduler(
                ComputationGraph([GraphNode("t", MessageTriggerOp("never", timeout=0.05), {})])
            ).run({})
        )
    with pytest.raises(ValueError, match="message_type"):
        MessageTriggerOp("")


def test_operators_see_the_message_scheduler_in_metadata() -> None:
    s = MessageAwareNodeScheduler(_noop_graph(), metadata={"node": "n"})
    ctx = asyncio.run(s.run({}))["noop"]
    assert ctx.metadata["scheduler"] is s
    assert ctx.metadata["node"] == "n"
