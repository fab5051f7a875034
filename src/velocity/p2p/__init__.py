"""Byzantine-robust decentralized (peer-to-peer) training.

Every node holds a model; in each round it takes a local SGD step on its own data, sends the
result to its out-neighbours and mixes what it receives from its in-neighbours. The nodes'
vectors live in ONE ``(n, d)`` tensor, so a round is a handful of tensor operations:

- :mod:`~velocity.p2p.topology`: :class:`Topology` (directed graph; ring, complete, random
  regular, Erdős–Rényi, networkx, plain config) and :class:`Edge`;
- :mod:`~velocity.p2p.mixing`: gossip matrices and mixing rules on the stacked vectors —
  :func:`gossip`, :func:`clipped_gossip`, :func:`nna`, :func:`robust_neighbourhood` — and
  :func:`consensus_distance`;
- :mod:`~velocity.p2p.training`: :class:`DecentralizedSGD`, every node's gradient in one
  ``vmap(grad(...))`` pass, Byzantine nodes sending crafted vectors from
  :mod:`velocity.attacks`, metrics per round.

See ``docs/p2p.md``.
"""

from __future__ import annotations

from velocity.p2p.mixing import (
    adaptive_clip_radius,
    clipped_gossip,
    consensus_distance,
    gossip,
    metropolis_weights,
    nna,
    robust_neighbourhood,
    second_eigenvalue_modulus,
)
from velocity.p2p.topology import TOPOLOGY_KINDS, Edge, Topology, topology_from_config
from velocity.p2p.training import (
    ATTACK_KNOWLEDGE,
    ATTACK_SPACES,
    MAX_NODES,
    MAX_PARAM_BYTES,
    MIXING_RULES,
    DecentralizedSGD,
    P2PRound,
    check_attack,
    check_mixing,
)

__all__ = [
    "ATTACK_KNOWLEDGE",
    "ATTACK_SPACES",
    "MAX_NODES",
    "MAX_PARAM_BYTES",
    "MIXING_RULES",
    "TOPOLOGY_KINDS",
    "DecentralizedSGD",
    "Edge",
    "P2PRound",
    "Topology",
    "adaptive_clip_radius",
    "check_attack",
    "check_mixing",
    "clipped_gossip",
    "consensus_distance",
    "gossip",
    "metropolis_weights",
    "nna",
    "robust_neighbourhood",
    "second_eigenvalue_modulus",
    "topology_from_config",
]
