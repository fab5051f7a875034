"""ByzPy's peer-to-peer training: :class:`Topology` and :class:`PeerToPeer` over node actors.

The vectorized trainer (all node models as one ``(n, d)`` tensor, one mixing step per
round) is :mod:`velocity.p2p`; this package keeps ByzPy's node-object API.
"""

from velocity.byzpy.engine.peer_to_peer.topology import Edge, Topology
from velocity.byzpy.engine.peer_to_peer.train import PeerToPeer

__all__ = ["Edge", "PeerToPeer", "Topology"]
