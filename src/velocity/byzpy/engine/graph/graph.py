"""``ComputationGraph``: a DAG of operators, the unit a :class:`NodeScheduler` runs.

Each :class:`GraphNode` runs one :class:`~velocity.byzpy.engine.graph.operator.Operator`;
its ``inputs`` map the operator's input names to where the values come from: the output
of another node (its name, a ``str``), a graph-level input (:func:`graph_input`), or a
message (:class:`~velocity.byzpy.engine.graph.scheduler.MessageSource`, for
:class:`~velocity.byzpy.engine.graph.scheduler.MessageAwareNodeScheduler`).

>>> from velocity.byzpy.engine.graph.operator import Operator
>>> class Add(Operator):
...     def compute(self, inputs, *, context):
...         return inputs["a"] + inputs["b"]
>>> g = ComputationGraph(
...     [GraphNode("s", Add(), {"a": graph_input("x"), "b": graph_input("y")}),
...      GraphNode("t", Add(), {"a": "s", "b": graph_input("x")})]
... )
>>> sorted(g.required_inputs), g.outputs
(['x', 'y'], ['t'])
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Union

from velocity.byzpy.engine.graph.operator import Operator

if TYPE_CHECKING:
    from velocity.byzpy.engine.graph.scheduler import MessageSource

__all__ = ["ComputationGraph", "GraphInput", "GraphNode", "graph_input"]

InputRef = Union[str, "GraphInput", "MessageSource"]


@dataclass(frozen=True)
class GraphInput:
    """A reference to a value the caller supplies when the graph runs (``inputs[name]``)."""

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"GraphInput.name must be a non-empty str; got {self.name!r}")

    @classmethod
    def from_message(
        cls, message_type: str, field: str | None = None, timeout: float | None = None
    ) -> MessageSource:
        """A graph input filled by a delivered message (see :class:`MessageSource`)."""
        from velocity.byzpy.engine.graph.scheduler import MessageSource

        return MessageSource(message_type=message_type, field=field, timeout=timeout)


def graph_input(name: str) -> GraphInput:
    """``GraphInput(name)``: the graph-level input ``name``."""
    return GraphInput(name)


def _is_message_source(ref: object) -> bool:
    from velocity.byzpy.engine.graph.scheduler import MessageSource

    return isinstance(ref, MessageSource)


@dataclass(frozen=True)
class GraphNode:
    """One operator of a graph and where its inputs come from.

    Parameters
    ----------
    name : str
        Unique within the graph; other nodes refer to this node's output by it.
    op : Operator
        What the node runs.
    inputs : mapping of str to (str, GraphInput or MessageSource)
        The operator's input name -> another node's name, a :func:`graph_input`, or a
        :class:`MessageSource`.
    """

    name: str
    op: Operator
    inputs: Mapping[str, InputRef] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"GraphNode.name must be a non-empty str; got {self.name!r}")
        if not isinstance(self.op, Operator):
            raise TypeError(
                f"GraphNode {self.name!r}: op must be an Operator; got {type(self.op).__name__}"
            )
        if not isinstance(self.inputs, Mapping):
            raise TypeError(
                f"GraphNode {self.name!r}: inputs must be a mapping; got "
                f"{type(self.inputs).__name__}"
            )
        for key, ref in self.inputs.items():
            if not isinstance(key, str) or not key:
                raise ValueError(
                    f"GraphNode {self.name!r}: input names must be non-empty str; got {key!r}"
                )
            ok = (
                (isinstance(ref, str) and ref)
                or isinstance(ref, GraphInput)
                or _is_message_source(ref)
            )
            if not ok:
                raise ValueError(
                    f"GraphNode {self.name!r}: input {key!r} must be a node name (non-empty str), "
                    f"a graph_input(...) or a MessageSource; got {ref!r}"
                )
        object.__setattr__(self, "inputs", MappingProxyType(dict(self.inputs)))

    def node_dependencies(self) -> tuple[str, ...]:
        """The names of the nodes whose outputs this node reads, in input order."""
        return tuple(dict.fromkeys(ref for ref in self.inputs.values() if isinstance(ref, str)))


class ComputationGraph:
    """A validated DAG of :class:`GraphNode` s.

    Parameters
    ----------
    nodes : sequence of GraphNode
        At least one; names unique; every node reference must name a node of the graph and
        the references must not form a cycle.
    outputs : sequence of str, optional
        The nodes whose results :meth:`NodeScheduler.run` returns (default: the last node in
        topological order).

    Attributes
    ----------
    outputs : list of str
    required_inputs : frozenset of str
        The names of the graph inputs the caller must supply.

    Raises
    ------
    ValueError
        Naming the offending node: a duplicate name, an unknown reference, a cycle, an
        unknown output.

    Notes
    -----
    The topological order is ByzPy's: Kahn's algorithm taking the most recently readied
    node first, with nodes readied in declaration order.
    """

    def __init__(self, nodes: Sequence[GraphNode], *, outputs: Sequence[str] | None = None) -> None:
        if isinstance(nodes, (str, bytes)) or not isinstance(nodes, Sequence) or not nodes:
            raise ValueError(
                f"ComputationGraph needs a non-empty sequence of GraphNode; got {nodes!r}"
            )
        self._nodes: dict[str, GraphNode] = {}
        for node in nodes:
            if not isinstance(node, GraphNode):
                raise TypeError(
                    f"ComputationGraph: expected GraphNode items; got {type(node).__name__}"
                )
            if node.name in self._nodes:
                raise ValueError(f"ComputationGraph: duplicate node name {node.name!r}")
            self._nodes[node.name] = node
        for node in self._nodes.values():
            for key, ref in node.inputs.items():
                if isinstance(ref, str) and ref not in self._nodes:
                    raise ValueError(
                        f"ComputationGraph: node {node.name!r} input {key!r} depends on unknown "
                        f"node {ref!r}; known nodes: {sorted(self._nodes)}"
                    )
        self._order: tuple[str, ...] = self._topological_order()
        if outputs is None:
            self.outputs: list[str] = [self._order[-1]]
        else:
            if isinstance(outputs, str) or not isinstance(outputs, Sequence) or not outputs:
                raise ValueError(
                    "ComputationGraph.outputs must be a non-empty sequence of node names; "
                    f"got {outputs!r}"
                )
            self.outputs = list(outputs)
            for out in self.outputs:
                if out not in self._nodes:
                    raise ValueError(
                        f"ComputationGraph: unknown output node {out!r}; known nodes: "
                        f"{sorted(self._nodes)}"
                    )
            if len(set(self.outputs)) != len(self.outputs):
                raise ValueError(f"ComputationGraph.outputs has duplicates: {self.outputs}")
        self.required_inputs: frozenset[str] = frozenset(
            ref.name
            for node in self._nodes.values()
            for ref in node.inputs.values()
            if isinstance(ref, GraphInput)
        )

    def __repr__(self) -> str:
        return f"ComputationGraph(nodes={list(self._order)}, outputs={self.outputs})"

    def __len__(self) -> int:
        return len(self._nodes)

    @property
    def nodes(self) -> Mapping[str, GraphNode]:
        """The nodes by name (declaration order)."""
        return MappingProxyType(self._nodes)

    @property
    def order(self) -> tuple[str, ...]:
        """Node names in topological order."""
        return self._order

    def node(self, name: str) -> GraphNode:
        """The node named ``name``."""
        try:
            return self._nodes[name]
        except KeyError:
            raise KeyError(f"no graph node {name!r}; known nodes: {sorted(self._nodes)}") from None

    def nodes_in_order(self) -> Iterator[GraphNode]:
        """The nodes, each after every node it depends on."""
        for name in self._order:
            yield self._nodes[name]

    def _topological_order(self) -> tuple[str, ...]:
        pending = {name: set(node.node_dependencies()) for name, node in self._nodes.items()}
        ready = [name for name, deps in pending.items() if not deps]
        order: list[str] = []
        while ready:
            name = ready.pop()
            order.append(name)
            for child, deps in pending.items():
                if name in deps:
                    deps.discard(name)
                    if not deps:
                        ready.append(child)
        if len(order) != len(self._nodes):
            raise ValueError(
                f"ComputationGraph contains a cycle through nodes {_on_cycles(pending)}"
            )
        return tuple(order)


def _on_cycles(pending: Mapping[str, set[str]]) -> list[str]:
    """The blocked nodes less those merely downstream of a cycle (peeled off as sinks)."""
    stuck = {name: set(deps) for name, deps in pending.items() if deps}
    while True:
        needed = set().union(*stuck.values()) if stuck else set()
        sinks = [name for name in stuck if name not in needed]
        if not sinks:
            return sorted(stuck)
        for name in sinks:
            del stuck[name]
