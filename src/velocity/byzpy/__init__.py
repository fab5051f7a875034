"""ByzPy's API on VelocityFL: port a ByzPy 0.1.4 script by replacing ``byzpy`` with
``velocity.byzpy``.

Every class and function of ByzPy's API reference is here, with its signature, defaults and
constraints, both under its ByzPy module path (``velocity.byzpy.aggregators.geometric_wise.
krum.MultiKrum``, ``velocity.byzpy.engine.parameter_server.ps.ParameterServer``...) and from
this package. The classes are thin: each rule runs on VelocityFL's one implementation of it
(:mod:`velocity.kernels`, :mod:`velocity.attacks`, the round engine, :mod:`velocity.p2p`).
docs/byzpy.md has the porting table and every semantic difference.
"""

from velocity.byzpy.aggregators.base import Aggregator
from velocity.byzpy.aggregators.coordinate_wise.mean_of_medians import MeanOfMedians
from velocity.byzpy.aggregators.coordinate_wise.median import CoordinateWiseMedian
from velocity.byzpy.aggregators.coordinate_wise.trimmed_mean import CoordinateWiseTrimmedMean
from velocity.byzpy.aggregators.geometric_wise.geometric_median import GeometricMedian
from velocity.byzpy.aggregators.geometric_wise.krum import Krum, MultiKrum
from velocity.byzpy.aggregators.geometric_wise.minimum_diameter_average import (
    MinimumDiameterAveraging,
)
from velocity.byzpy.aggregators.geometric_wise.monna import MoNNA
from velocity.byzpy.aggregators.geometric_wise.smea import SMEA
from velocity.byzpy.aggregators.norm_wise.caf import CAF
from velocity.byzpy.aggregators.norm_wise.center_clipping import CenteredClipping
from velocity.byzpy.aggregators.norm_wise.comparative_gradient_elimination import (
    ComparativeGradientElimination,
)
from velocity.byzpy.attacks.base import Attack
from velocity.byzpy.attacks.empire import EmpireAttack
from velocity.byzpy.attacks.gaussian import GaussianAttack
from velocity.byzpy.attacks.inf import InfAttack
from velocity.byzpy.attacks.label_flip import LabelFlipAttack
from velocity.byzpy.attacks.little import LittleAttack
from velocity.byzpy.attacks.mimic import MimicAttack
from velocity.byzpy.attacks.sign_flip import SignFlipAttack
from velocity.byzpy.engine.actor.factory import ActorBackend, resolve_backend
from velocity.byzpy.engine.graph.executor import OperatorExecutor, run_operator
from velocity.byzpy.engine.graph.graph import ComputationGraph, GraphInput, GraphNode, graph_input
from velocity.byzpy.engine.graph.operator import OpContext, Operator
from velocity.byzpy.engine.graph.ops import CallableOp, make_single_operator_graph
from velocity.byzpy.engine.graph.pool import ActorPool, ActorPoolChannel, ActorPoolConfig
from velocity.byzpy.engine.graph.scheduler import (
    MessageAwareNodeScheduler,
    MessageSource,
    NodeScheduler,
)
from velocity.byzpy.engine.graph.subtask import SubTask
from velocity.byzpy.engine.node.actors import ByzantineNodeActor, HonestNodeActor
from velocity.byzpy.engine.node.application import (
    ByzantineNodeApplication,
    HonestNodeApplication,
    NodeApplication,
    NodePipeline,
)
from velocity.byzpy.engine.node.base import ByzantineNode, HonestNode
from velocity.byzpy.engine.node.mixin import P2PByzantineMixin, P2PHonestMixin
from velocity.byzpy.engine.parameter_server.ps import ParameterServer
from velocity.byzpy.engine.peer_to_peer.topology import Edge, Topology
from velocity.byzpy.engine.peer_to_peer.train import PeerToPeer
from velocity.byzpy.pre_aggregators.arc import ARC
from velocity.byzpy.pre_aggregators.base import PreAggregator
from velocity.byzpy.pre_aggregators.bucketing import Bucketing
from velocity.byzpy.pre_aggregators.clipping import Clipping
from velocity.byzpy.pre_aggregators.nnm import NearestNeighborMixing

__all__ = [
    "ARC",
    "CAF",
    "SMEA",
    "ActorBackend",
    "ActorPool",
    "ActorPoolChannel",
    "ActorPoolConfig",
    "Aggregator",
    "Attack",
    "Bucketing",
    "ByzantineNode",
    "ByzantineNodeActor",
    "ByzantineNodeApplication",
    "CallableOp",
    "CenteredClipping",
    "Clipping",
    "ComparativeGradientElimination",
    "ComputationGraph",
    "CoordinateWiseMedian",
    "CoordinateWiseTrimmedMean",
    "Edge",
    "EmpireAttack",
    "GaussianAttack",
    "GeometricMedian",
    "GraphInput",
    "GraphNode",
    "HonestNode",
    "HonestNodeActor",
    "HonestNodeApplication",
    "InfAttack",
    "Krum",
    "LabelFlipAttack",
    "LittleAttack",
    "MeanOfMedians",
    "MessageAwareNodeScheduler",
    "MessageSource",
    "MimicAttack",
    "MinimumDiameterAveraging",
    "MoNNA",
    "MultiKrum",
    "NearestNeighborMixing",
    "NodeApplication",
    "NodePipeline",
    "NodeScheduler",
    "OpContext",
    "Operator",
    "OperatorExecutor",
    "P2PByzantineMixin",
    "P2PHonestMixin",
    "ParameterServer",
    "PeerToPeer",
    "PreAggregator",
    "SignFlipAttack",
    "SubTask",
    "Topology",
    "graph_input",
    "make_single_operator_graph",
    "resolve_backend",
    "run_operator",
]
