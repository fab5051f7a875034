"""Secure aggregation (SecAgg+): the server learns only the sum of the clients' inputs.

SecAgg+ (Bell, Bonawitz, Gascón, Lepoint, Raykova, CCS 2020) on top of SecAgg (Bonawitz et
al., CCS 2017): each client masks its fixed-point encoded vector with a self mask and with
pairwise masks shared with its k neighbours in a random sparse graph, and Shamir-shares the
secrets behind those masks among the same neighbours, so the server can remove the masks of
clients that drop out and learns nothing but the sum. ``docs/secagg_design.md`` describes the
protocol, the threat model and the costs.

- :class:`ThreatModel` and :func:`derive_parameters` -> :class:`SecAggParams` (k, t, fixed
  point, modulus) from exact tail bounds.
- :class:`SecAggSession` (public set-up), :class:`SecAggServer` (server side of a round
  engine), :class:`SecAggClient` (client side), the message dataclasses and
  :func:`decode_message` (the byte layout on the wire).
- :func:`secure_sum`: an in-process driver returning a :class:`SecAggResult`.
- Primitives: :func:`shamir_share` / :func:`shamir_reconstruct`,
  :func:`encode_fixed_point` / :func:`decode_fixed_point`, :class:`SeededEntropy`.
"""

from velocity.secagg._crypto import Entropy, SeededEntropy, system_entropy
from velocity.secagg._field import decode_fixed_point, encode_fixed_point
from velocity.secagg._graph import CommunicationGraph
from velocity.secagg._messages import (
    AdvertiseKeys,
    EncryptedShare,
    ForwardedShares,
    MaskedInput,
    Message,
    MessageType,
    NeighbourKeys,
    PeerKeys,
    RevealedShare,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
    no_dropout_traffic,
)
from velocity.secagg._params import (
    SecAggParams,
    ThreatModel,
    correctness_failure_bound,
    derive_parameters,
    privacy_failure_bound,
)
from velocity.secagg._protocol import SecAggClient, SecAggServer, SecAggSession, ServerOutput
from velocity.secagg._shamir import shamir_reconstruct, shamir_share
from velocity.secagg._simulate import SecAggResult, secure_sum

__all__ = [
    "AdvertiseKeys",
    "CommunicationGraph",
    "EncryptedShare",
    "Entropy",
    "ForwardedShares",
    "MaskedInput",
    "Message",
    "MessageType",
    "NeighbourKeys",
    "PeerKeys",
    "RevealedShare",
    "SecAggClient",
    "SecAggParams",
    "SecAggResult",
    "SecAggServer",
    "SecAggSession",
    "SeededEntropy",
    "ServerOutput",
    "ShareKeys",
    "ThreatModel",
    "UnmaskRequest",
    "UnmaskResponse",
    "correctness_failure_bound",
    "decode_fixed_point",
    "decode_message",
    "derive_parameters",
    "encode_fixed_point",
    "no_dropout_traffic",
    "privacy_failure_bound",
    "secure_sum",
    "shamir_reconstruct",
    "shamir_share",
    "system_entropy",
]
