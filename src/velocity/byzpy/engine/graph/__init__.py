"""Computation graphs and their scheduling: operators, graphs, schedulers, actor pools.

ByzPy 0.1.4's ``byzpy.engine.graph`` package re-exports nothing; the names are importable
from their modules (``velocity.byzpy.engine.graph.graph``...) and, for convenience, here.
"""

from velocity.byzpy.engine.graph.graph import ComputationGraph, GraphInput, GraphNode, graph_input
from velocity.byzpy.engine.graph.operator import OpContext, Operator, SubtaskRunner
from velocity.byzpy.engine.graph.ops import CallableOp, RemoteCallableOp, make_single_operator_graph
from velocity.byzpy.engine.graph.pool import ActorPool, ActorPoolChannel, ActorPoolConfig
from velocity.byzpy.engine.graph.scheduler import (
    MessageAwareNodeScheduler,
    MessageSource,
    MessageTriggerOp,
    NodeScheduler,
)
from velocity.byzpy.engine.graph.subtask import SubTask

__all__ = [
    "ActorPool",
    "ActorPoolChannel",
    "ActorPoolConfig",
    "CallableOp",
    "ComputationGraph",
    "GraphInput",
    "GraphNode",
    "MessageAwareNodeScheduler",
    "MessageSource",
    "MessageTriggerOp",
    "NodeScheduler",
    "OpContext",
    "Operator",
    "RemoteCallableOp",
    "SubTask",
    "SubtaskRunner",
    "graph_input",
    "make_single_operator_graph",
]
