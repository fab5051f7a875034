"""``ComputationGraph``, ``GraphNode``, ``graph_input`` and the ready-made ops."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velocity.byzpy.engine.graph.graph import ComputationGraph, GraphInput, GraphNode, graph_input
from velocity.byzpy.engine.graph.operator import OpContext, Operator
from velocity.byzpy.engine.graph.ops import (
    CallableOp,
    RemoteCallableOp,
    make_single_operator_graph,
)
from velocity.byzpy.engine.graph.scheduler import MessageSource

CTX = OpContext(node_name="n")


class Sum(Operator):
    name = "sum"

    def compute(self, inputs: Mapping[str, object], *, context: OpContext) -> object:
        return sum(inputs.values())  # type: ignore[arg-type]


def test_graph_input_is_a_named_reference() -> None:
    assert graph_input("x") == GraphInput("x")
    assert graph_input("x").name == "x"
    with pytest.raises(ValueError, match="non-empty"):
        graph_input("")


def test_from_message_builds_a_message_source() -> None:
    src = GraphInput.from_message("grad", field="vec", timeout=0.5)
    assert isinstance(src, MessageSource)
    assert (src.message_type, src.field, src.timeout) == ("grad", "vec", 0.5)


def test_required_inputs_and_default_output() -> None:
    g = ComputationGraph(
        [
            GraphNode("a", Sum(), {"x": graph_input("x"), "y": graph_input("y")}),
            GraphNode("b", Sum(), {"a": "a", "z": graph_input("z")}),
            GraphNode("c", Sum(), {"m": MessageSource("m")}),
            GraphNode("d", Sum(), {"b": "b", "c": "c"}),
        ]
    )
    assert g.required_inputs == frozenset({"x", "y", "z"})  # messages are not required inputs
    assert g.outputs == ["d"]  # the only sink is last in any topological order
    assert len(g) == 4
    assert g.node("b").node_dependencies() == ("a",)
    with pytest.raises(KeyError, match="'nope'"):
        g.node("nope")


def test_explicit_outputs_are_checked() -> None:
    nodes = [GraphNode("a", Sum(), {}), GraphNode("b", Sum(), {"a": "a"})]
    assert ComputationGraph(nodes, outputs=["a", "b"]).outputs == ["a", "b"]
    with pytest.raises(ValueError, match="unknown output node 'q'"):
        ComputationGraph(nodes, outputs=["q"])
    with pytest.raises(ValueError, match="duplicates"):
        ComputationGraph(nodes, outputs=["a", "a"])
    with pytest.raises(ValueError, match="non-empty sequence"):
        ComputationGraph(nodes, outputs="a")


def test_duplicate_and_unknown_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate node name 'a'"):
        ComputationGraph([GraphNode("a", Sum(), {}), GraphNode("a", Sum(), {})])
    with pytest.raises(ValueError, match="node 'b' input 'p' depends on unknown node 'ghost'"):
        ComputationGraph([GraphNode("a", Sum(), {}), GraphNode("b", Sum(), {"p": "ghost"})])
    with pytest.raises(ValueError, match="non-empty sequence"):
        ComputationGraph([])


def test_cycles_are_rejected_naming_their_nodes() -> None:
    with pytest.raises(ValueError, match=r"cycle through nodes \['a', 'b'\]"):
        ComputationGraph(
            [
                GraphNode("a", Sum(), {"p": "b"}),
                GraphNode("b", Sum(), {"p": "a"}),
                GraphNode("after", Sum(), {"p": "b"}),  # downstream, not on the cycle
                GraphNode("free", Sum(), {}),
            ]
        )
    with pytest.raises(ValueError, match=r"cycle through nodes \['self'\]"):
        ComputationGraph([GraphNode("self", Sum(), {"p": "self"})])


def test_graph_node_validates_its_fields() -> None:
    with pytest.raises(TypeError, match="op must be an Operator"):
        GraphNode("a", lambda: 1, {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="input 'p' must be a node name"):
        GraphNode("a", Sum(), {"p": 3})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="non-empty str"):
        GraphNode("", Sum(), {})
    with pytest.raises(TypeError, match="expected GraphNode"):
        ComputationGraph(["a"])  # type: ignore[list-item]
    node = GraphNode("a", Sum(), {"p": graph_input("x")})
    with pytest.raises(TypeError):
        node.inputs["q"] = "z"  # type: ignore[index]  # frozen


@st.composite
def dags(draw: st.DrawFn) -> list[tuple[str, list[str]]]:
    n = draw(st.integers(1, 9))
    spec = []
    for k in range(n):
        deps = draw(st.lists(st.integers(0, k - 1), unique=True, max_size=k)) if k else []
        spec.append((f"n{k}", [f"n{d}" for d in deps]))
    return spec


@settings(max_examples=60, deadline=None)
@given(dags(), st.randoms(use_true_random=False))
def test_topological_order_puts_every_node_after_its_dependencies(
    spec: list[tuple[str, list[str]]], rnd: object
) -> None:
    shuffled = list(spec)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    nodes = [
        GraphNode(name, Sum(), {f"i{j}": d for j, d in enumerate(deps)}) for name, deps in shuffled
    ]
    g = ComputationGraph(nodes)
    order = [node.name for node in g.nodes_in_order()]
    assert sorted(order) == sorted(name for name, _ in spec)
    position = {name: k for k, name in enumerate(order)}
    for name, deps in spec:
        assert all(position[d] < position[name] for d in deps)
    assert g.order == tuple(order)


def test_callable_op_maps_inputs_to_parameters() -> None:
    op = CallableOp(lambda a, b: a - b, input_mapping={"a": "x", "b": "y"}, name="minus")
    assert op.name == "minus"
    assert op.compute({"x": 5, "y": 2, "unused": 0}, context=CTX) == 3
    with pytest.raises(KeyError, match="missing input 'y' for parameter 'b'"):
        op.compute({"x": 5}, context=CTX)
    with pytest.raises(TypeError, match="callable"):
        CallableOp(3, input_mapping={})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="input_mapping"):
        CallableOp(abs, input_mapping={"a": ""})
    assert CallableOp(abs, input_mapping={}).name == "callable"


def test_remote_callable_op_is_one_subtask() -> None:
    op = RemoteCallableOp(lambda a: a * 2, input_mapping={"a": "x"})
    assert op.supports_subtasks
    (task,) = list(op.create_subtasks({"x": 21}, context=CTX))
    assert task.fn(**task.kwargs) == 42
    assert op.reduce_subtasks([42], {"x": 21}, context=CTX) == 42
    assert op.compute({"x": 1}, context=CTX) == 2


def test_make_single_operator_graph() -> None:
    op = Sum()
    g = make_single_operator_graph(node_name="agg", operator=op, input_keys=["gradients", "w"])
    assert g.outputs == ["agg"]
    assert g.required_inputs == frozenset({"gradients", "w"})
    node = g.node("agg")
    assert node.op is op
    assert dict(node.inputs) == {"gradients": graph_input("gradients"), "w": graph_input("w")}
    with pytest.raises(ValueError, match="not a str"):
        make_single_operator_graph(node_name="agg", operator=op, input_keys="gradients")
