"""Nodes: the node classes scripts subclass (:class:`HonestNode`, :class:`ByzantineNode`),
actors that host them (:class:`HonestNodeActor`, :class:`ByzantineNodeActor`), and node
applications that run computation graphs on an actor pool (:class:`NodeApplication`,
:class:`HonestNodeApplication`, :class:`ByzantineNodeApplication`)."""

from velocity.byzpy.engine.graph.ops import (
    CallableOp,
    RemoteCallableOp,
    make_single_operator_graph,
)
from velocity.byzpy.engine.node.actors import (
    ByzantineNodeActor,
    HonestNodeActor,
    NodeActor,
    call_node,
)
from velocity.byzpy.engine.node.application import (
    ByzantineNodeApplication,
    HonestNodeApplication,
    NodeApplication,
    NodePipeline,
)
from velocity.byzpy.engine.node.base import ByzantineNode, HonestNode, Node

__all__ = [
    "ByzantineNode",
    "ByzantineNodeActor",
    "ByzantineNodeApplication",
    "CallableOp",
    "HonestNode",
    "HonestNodeActor",
    "HonestNodeApplication",
    "Node",
    "NodeActor",
    "NodeApplication",
    "NodePipeline",
    "RemoteCallableOp",
    "call_node",
    "make_single_operator_graph",
]
