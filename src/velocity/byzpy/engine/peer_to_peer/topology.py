"""ByzPy's ``Topology`` and ``Edge``: the directed communication graph of a P2P run.

They are :class:`velocity.p2p.Topology` and :class:`velocity.p2p.Edge` themselves (one
implementation): ``Topology(n_nodes, edges)``, ``Topology.ring(n, k)`` (each node sends to
its ``k`` successors and ``k`` predecessors, as in ByzPy), ``Topology.complete(n)``, and
VelocityFL's extra constructors (random regular, Erdős–Rényi, from an edge list or networkx).
"""

from velocity.p2p.topology import Edge, Topology

__all__ = ["Edge", "Topology"]
