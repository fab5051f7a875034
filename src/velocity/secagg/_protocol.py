"""The SecAgg+ protocol engine: a server object and client objects exchanging messages.

Transport-agnostic: the engine never sends anything. A driver (the in-process
:func:`~velocity.secagg.secure_sum`, or a network coordinator) moves each message — a
dataclass of :mod:`velocity.secagg._messages`, or its bytes — from one side to the other,
round by round::

    round 0  client.advertise_keys()          -> server.receive_keys(u, msg)
             server.route_keys()              -> {u: NeighbourKeys}
    round 1  client.share_keys(keys)          -> server.receive_shares(u, msg)
             server.route_shares()            -> {u: ForwardedShares}
    round 2  client.mask_input(shares, x)     -> server.receive_masked_input(u, msg)
             server.request_unmasking()       -> {u: UnmaskRequest}
    round 3  client.unmask(request)           -> server.receive_unmask_response(u, msg)
             server.finish()                  -> ServerOutput (the sum of the survivors)

A client that does not answer in a round has dropped; the server simply closes the round
with whoever answered. The transport must authenticate who sent what (the ``sender``
argument; a message naming another sender is refused). Every client method may be called
once, in order; the objects refuse anything else.

Security notes (``docs/secagg_design.md``): a client checks that the server forwards exactly
graph neighbours (computed from the public session id), distinct keys, at least ``t`` of
them, and that an unmasking request partitions its neighbours into survivors and dropped,
names each once, and comes only once — asking for both shares of one neighbour, now or in a
second request, is a :class:`~velocity.errors.SecurityError`. The server checks that every
rebuilt masking key matches the public key its owner advertised.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import torch
from numpy.typing import NDArray

from velocity.errors import ConfigurationError, ProtocolError, SecurityError, ValidationError
from velocity.secagg._crypto import (
    KEY_BYTES,
    Entropy,
    KeyPair,
    agree,
    derive_key,
    generate_key_pair,
    load_private,
    open_sealed,
    pair_context,
    prg_add,
    seal,
    system_entropy,
)
from velocity.secagg._field import decode_fixed_point, encode_fixed_point, mask_dtype
from velocity.secagg._graph import CommunicationGraph
from velocity.secagg._messages import (
    SHARE_WIRE_BYTES,
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
    decode_share,
    encode_share,
)
from velocity.secagg._params import SecAggParams
from velocity.secagg._shamir import Share, shamir_reconstruct, shamir_share

__all__ = ["SESSION_ID_BYTES", "SecAggClient", "SecAggServer", "SecAggSession", "ServerOutput"]

SESSION_ID_BYTES: Final = 32
_MAX_NAMED: Final = 10


@dataclass(frozen=True)
class SecAggSession:
    """The public set-up of one round, known to the server and every client.

    Parameters
    ----------
    params : SecAggParams
        The round's parameters (``params.n`` must equal ``len(client_ids)``).
    client_ids : tuple of str
        The roster; a client's protocol index is its position, its Shamir evaluation point
        the index + 1.
    dimension : int
        ``d``, the length of every input vector.
    session_id : bytes
        32 fresh random bytes: salts every key derivation, is bound into every ciphertext
        and seeds the communication graph. It must not be chosen after the corrupt clients
        are (see the design note); :meth:`create` draws it from ``entropy``.
    """

    params: SecAggParams
    client_ids: tuple[str, ...]
    dimension: int
    session_id: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.params, SecAggParams):
            raise ConfigurationError("SecAggSession.params must be a SecAggParams")
        ids = self.client_ids
        if not isinstance(ids, tuple) or not all(isinstance(i, str) and i for i in ids):
            raise ConfigurationError("SecAggSession.client_ids must be a tuple of non-empty str")
        if len(set(ids)) != len(ids):
            raise ConfigurationError("SecAggSession.client_ids must be distinct")
        if len(ids) != self.params.n:
            raise ConfigurationError(
                f"SecAggSession has {len(ids)} client_ids but params.n={self.params.n}"
            )
        d = self.dimension
        if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d < 2**32:
            raise ConfigurationError(f"SecAggSession.dimension must be an int >= 1; got {d!r}")
        sid = self.session_id
        if not isinstance(sid, bytes) or len(sid) != SESSION_ID_BYTES:
            raise ConfigurationError(f"SecAggSession.session_id must be {SESSION_ID_BYTES} bytes")

    @classmethod
    def create(
        cls,
        params: SecAggParams,
        client_ids: Sequence[str],
        dimension: int,
        *,
        entropy: Entropy = system_entropy,
    ) -> SecAggSession:
        """A session with a fresh ``session_id`` drawn from ``entropy``."""
        return cls(params, tuple(client_ids), dimension, entropy(SESSION_ID_BYTES))

    @functools.cached_property
    def graph(self) -> CommunicationGraph:
        """The communication graph (Harary on a permutation drawn from ``session_id``)."""
        return CommunicationGraph.from_seed(self.params.n, self.params.k, self.session_id)

    def name(self, index: int) -> str:
        """``"client 'id' (index i)"`` for messages."""
        return f"client {self.client_ids[index]!r} (index {index})"

    def names(self, indices: Sequence[int]) -> str:
        """Up to ten client names, then a count of the rest."""
        shown = ", ".join(self.name(i) for i in indices[:_MAX_NAMED])
        more = len(indices) - _MAX_NAMED
        return shown + (f" and {more} more" if more > 0 else "")

    def decode(self, data: bytes) -> Message:
        """:func:`~velocity.secagg._messages.decode_message` with this round's limits."""
        return decode_message(
            data, n=self.params.n, dimension=self.dimension, modulus_bits=self.params.modulus_bits
        )

    def share_associated_data(self, sender: int, recipient: int) -> bytes:
        """The AEAD associated data of a sealed share: protocol, session, round, pair."""
        return (
            b"velocity-secagg/v1/share-keys\x00"
            + self.session_id
            + bytes([MessageType.SHARE_KEYS])
            + pair_context(sender, recipient)
        )

    def share_key(self, secret: bytes, *, sender: int, recipient: int) -> bytes:
        """The AES-GCM key for shares sealed by ``sender`` for ``recipient`` (one direction),
        from the X25519 secret of their encryption keys."""
        return derive_key(
            secret,
            session_id=self.session_id,
            purpose="share-encryption",
            context=pair_context(sender, recipient),
        )

    def pairwise_seed(self, private: KeyPair, peer_public: bytes, u: int, v: int) -> bytes:
        """The PRG seed of the pairwise mask between ``u`` and ``v`` (symmetric in the pair)."""
        secret = agree(private, peer_public, peer=self.name(v))
        return derive_key(
            secret,
            session_id=self.session_id,
            purpose="pairwise-mask",
            context=pair_context(min(u, v), max(u, v)),
        )

    def self_mask_seed(self, seed: bytes, u: int) -> bytes:
        """The PRG seed of ``u``'s self mask, from its shared 32-byte seed ``b_u``."""
        return derive_key(
            seed, session_id=self.session_id, purpose="self-mask", context=pair_context(u, u)
        )


def _sign(u: int, v: int) -> int:
    """Client u adds the pair's mask if ``u < v`` and subtracts it otherwise."""
    return 1 if u < v else -1


def _as_vector(x: object, d: int) -> NDArray[np.float64]:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        raise ValidationError("a secure-aggregation input must be a float numpy array or tensor")
    if x.shape != (d,):
        raise ValidationError(f"a secure-aggregation input must have shape ({d},); got {x.shape}")
    return np.asarray(x, dtype=np.float64)


class _ClientStage(enum.IntEnum):
    NEW = 0
    ADVERTISED = 1
    SHARED = 2
    MASKED = 3
    UNMASKED = 4


class SecAggClient:
    """One client of a SecAgg+ round (lives on the client side of a round engine).

    Parameters
    ----------
    session : SecAggSession
        The public set-up.
    index : int
        This client's index in ``session.client_ids``.
    entropy : callable, optional
        ``n -> n`` random bytes for keys, seeds, Shamir coefficients, nonces and the
        stochastic-rounding generator. Default :func:`os.urandom`; a
        :class:`~velocity.secagg.SeededEntropy` makes a simulation reproducible.
    """

    def __init__(
        self, session: SecAggSession, index: int, *, entropy: Entropy = system_entropy
    ) -> None:
        if isinstance(index, bool) or not isinstance(index, int):
            raise ConfigurationError(f"SecAggClient.index must be an int; got {index!r}")
        if not 0 <= index < session.params.n:
            raise ConfigurationError(
                f"SecAggClient.index must be in [0, {session.params.n - 1}]; got {index}"
            )
        self.session = session
        self.index = index
        self._entropy = entropy
        self._stage = _ClientStage.NEW
        self._encryption: KeyPair | None = None
        self._masking: KeyPair | None = None
        self._peers: dict[int, PeerKeys] = {}
        self._seed = b""
        self._held: dict[int, tuple[Share, Share]] = {}
        self._secrets: dict[int, bytes] = {}  # X25519 secrets of the encryption keys, per peer

    def __repr__(self) -> str:
        return f"SecAggClient({self.session.name(self.index)}, stage={self._stage.name})"

    @property
    def _name(self) -> str:
        return self.session.name(self.index)

    def _advance(self, expected: _ClientStage, action: str) -> None:
        if self._stage is not expected:
            raise ProtocolError(
                f"{self._name}: cannot {action} at stage {self._stage.name.lower()}"
            )
        self._stage = _ClientStage(expected + 1)

    def _key_pairs(self) -> tuple[KeyPair, KeyPair]:
        if self._encryption is None or self._masking is None:
            raise ProtocolError(f"{self._name} has no keys yet")
        return self._encryption, self._masking

    def _check_recipient(self, recipient: int, what: str) -> None:
        if recipient != self.index:
            raise ProtocolError(f"{self._name} received a {what} addressed to index {recipient}")

    # -- round 0 -----------------------------------------------------------------------------

    def advertise_keys(self) -> AdvertiseKeys:
        """Round 0: fresh X25519 key pairs ``c`` (share encryption) and ``s`` (masking)."""
        self._advance(_ClientStage.NEW, "advertise keys")
        self._encryption = generate_key_pair(self._entropy)
        self._masking = generate_key_pair(self._entropy)
        return AdvertiseKeys(self.index, self._encryption.public, self._masking.public)

    # -- round 1 -----------------------------------------------------------------------------

    def share_keys(self, message: NeighbourKeys) -> ShareKeys:
        """Round 1: Shamir-share ``b_u`` and the ``s`` private key among the neighbours.

        Raises
        ------
        SecurityError
            If the server forwards a client that is not a graph neighbour, or a public key
            twice (including this client's own).
        ProtocolError
            If fewer than ``t`` neighbours advertised keys.
        """
        self._advance(_ClientStage.ADVERTISED, "share keys")
        encryption, masking = self._key_pairs()
        self._check_recipient(message.recipient, "NeighbourKeys")
        params = self.session.params
        allowed = set(self.session.graph.neighbours(self.index))
        strangers = sorted(k.index for k in message.keys if k.index not in allowed)
        if strangers:
            raise SecurityError(
                f"{self._name}: the server forwarded keys of non-neighbours "
                f"{self.session.names(strangers)}"
            )
        seen = {encryption.public, masking.public}
        for peer in message.keys:
            for key in (peer.encryption_key, peer.masking_key):
                if key in seen:
                    raise SecurityError(
                        f"{self._name}: a public key of {self.session.name(peer.index)} repeats "
                        "another key of this round (reflected or reused)"
                    )
                seen.add(key)
        if len(message.keys) < params.t:
            raise ProtocolError(
                f"{self._name}: only {len(message.keys)} of its {params.k} neighbours advertised "
                f"keys; the threshold is t={params.t}"
            )
        self._peers = {peer.index: peer for peer in message.keys}
        self._seed = self._entropy(KEY_BYTES)
        order = sorted(self._peers)
        points = [v + 1 for v in order]
        seed_shares = shamir_share(self._seed, points, params.t, self._entropy)
        key_shares = shamir_share(masking.private, points, params.t, self._entropy)
        sealed = []
        for v in order:
            secret = agree(encryption, self._peers[v].encryption_key, peer=self.session.name(v))
            self._secrets[v] = secret
            key = self.session.share_key(secret, sender=self.index, recipient=v)
            text = encode_share(seed_shares[v + 1]) + encode_share(key_shares[v + 1])
            aad = self.session.share_associated_data(self.index, v)
            sealed.append(EncryptedShare(v, seal(key, text, aad, self._entropy)))
        return ShareKeys(self.index, tuple(sealed))

    # -- round 2 -----------------------------------------------------------------------------

    def mask_input(self, message: ForwardedShares, x: NDArray[Any] | torch.Tensor) -> MaskedInput:
        """Round 2: decrypt the neighbours' shares, send ``y = x + PRG(b_u) + sum ± PRG(s_uv)``.

        The pairwise masks cover exactly the neighbours whose shares arrived (they completed
        round 1, so their keys can be rebuilt if they drop).

        Raises
        ------
        SecurityError
            If a sealed share fails authentication.
        ProtocolError
            If a share comes from a client this one did not share with, or fewer than ``t``
            neighbours completed round 1.
        ValidationError
            If ``x`` is not a finite float vector of the session's dimension.
        """
        values = _as_vector(x, self.session.dimension)
        self._advance(_ClientStage.SHARED, "mask its input")
        _, masking = self._key_pairs()
        self._check_recipient(message.recipient, "ForwardedShares")
        params = self.session.params
        unknown = sorted(s.peer for s in message.shares if s.peer not in self._peers)
        if unknown:
            raise ProtocolError(
                f"{self._name} received shares from clients it did not exchange keys with: "
                f"{self.session.names(unknown)}"
            )
        for item in message.shares:
            v = item.peer
            key = self.session.share_key(self._secrets[v], sender=v, recipient=self.index)
            aad = self.session.share_associated_data(v, self.index)
            what = f"the shares {self.session.name(v)} sealed for {self._name}"
            text = open_sealed(key, item.sealed, aad, what=what)
            if len(text) != 2 * SHARE_WIRE_BYTES:
                raise ProtocolError(f"{what} have {len(text)} bytes")
            self._held[v] = (
                decode_share(text[:SHARE_WIRE_BYTES], what=what),
                decode_share(text[SHARE_WIRE_BYTES:], what=what),
            )
        if len(self._held) < params.t:
            raise ProtocolError(
                f"{self._name}: only {len(self._held)} of its neighbours completed key sharing; "
                f"the threshold is t={params.t}"
            )
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(self._entropy(32)))))
        y = encode_fixed_point(
            values,
            clip=params.clip,
            fixed_point_bits=params.fixed_point_bits,
            modulus_bits=params.modulus_bits,
            rounding=params.rounding,
            rng=rng,
        )
        prg_add(y, self.session.self_mask_seed(self._seed, self.index), +1)
        for v in sorted(self._held):
            seed = self.session.pairwise_seed(masking, self._peers[v].masking_key, self.index, v)
            prg_add(y, seed, _sign(self.index, v))
        return MaskedInput(self.index, y)

    # -- round 3 -----------------------------------------------------------------------------

    def unmask(self, message: UnmaskRequest) -> UnmaskResponse:
        """Round 3: reveal ``b``-shares of surviving neighbours, ``s``-shares of dropped ones.

        Raises
        ------
        SecurityError
            If the request names a neighbour as both survivor and dropped, or a second
            request arrives (either would let the server collect both shares of someone).
        ProtocolError
            If the request does not partition exactly the neighbours whose shares this
            client holds, names this client, or lists fewer than ``t`` survivors.
        """
        if self._stage is _ClientStage.UNMASKED:
            raise SecurityError(
                f"{self._name} already answered an unmasking request; a second one could "
                "reveal both shares of a neighbour and is refused"
            )
        self._advance(_ClientStage.MASKED, "unmask")
        self._check_recipient(message.recipient, "UnmaskRequest")
        params = self.session.params
        survivors, dropped = set(message.survivors), set(message.dropped)
        both = sorted(survivors & dropped)
        if both:
            raise SecurityError(
                f"{self._name} refuses an unmasking request that asks for both shares of "
                f"{self.session.names(both)}"
            )
        if len(survivors) != len(message.survivors) or len(dropped) != len(message.dropped):
            raise ProtocolError(f"{self._name}: the unmasking request names a client twice")
        if self.index in survivors | dropped:
            raise ProtocolError(f"{self._name}: the unmasking request lists this client itself")
        if survivors | dropped != set(self._held):
            missing = sorted(set(self._held) - survivors - dropped)
            extra = sorted((survivors | dropped) - set(self._held))
            raise ProtocolError(
                f"{self._name}: the unmasking request must list each neighbour it holds shares "
                f"of exactly once; missing {self.session.names(missing) or 'none'}, unknown "
                f"{self.session.names(extra) or 'none'}"
            )
        if len(survivors) < params.t:
            raise ProtocolError(
                f"{self._name}: only {len(survivors)} of its neighbours are listed as survivors; "
                f"the threshold is t={params.t}"
            )
        seeds = tuple(RevealedShare(v, self._held[v][0]) for v in sorted(survivors))
        keys = tuple(RevealedShare(v, self._held[v][1]) for v in sorted(dropped))
        return UnmaskResponse(self.index, seeds, keys)


@dataclass(frozen=True, eq=False)
class ServerOutput:
    """What the server learns: the sum of the included clients' inputs, and who they are.

    Attributes
    ----------
    total : ndarray of float64, shape (d,)
        The decoded sum of the included clients' (clipped, fixed-point) inputs.
    encoded : ndarray of uint32 or uint64, shape (d,)
        The same sum in Z_{2^b}, before decoding.
    included : tuple of int
        Indices of the clients whose inputs are in the sum (they sent a masked input).
    dropped : tuple of int
        Everyone else.
    """

    total: NDArray[np.float64]
    encoded: NDArray[np.unsignedinteger[Any]]
    included: tuple[int, ...]
    dropped: tuple[int, ...]


class _ServerStage(enum.IntEnum):
    KEYS = 0
    SHARES = 1
    MASKED = 2
    UNMASK = 3
    DONE = 4


class SecAggServer:
    """The server of a SecAgg+ round (lives on the server side of a round engine).

    It keeps only a running sum of the masked inputs (``d`` words), the routing tables and
    the revealed shares, so memory is ``O(d + n k)`` whatever the number of clients.
    """

    def __init__(self, session: SecAggSession) -> None:
        self.session = session
        self._stage = _ServerStage.KEYS
        self._keys: dict[int, AdvertiseKeys] = {}
        self._shares: dict[int, ShareKeys] = {}
        self._routed: dict[int, tuple[int, ...]] = {}
        self._acc = np.zeros(session.dimension, dtype=mask_dtype(session.params.modulus_bits))
        self._survivors: set[int] = set()
        self._requests: dict[int, UnmaskRequest] = {}
        self._responses: dict[int, UnmaskResponse] = {}

    def __repr__(self) -> str:
        return f"SecAggServer(n={self.session.params.n}, stage={self._stage.name})"

    def _expect(self, stage: _ServerStage, action: str) -> None:
        if self._stage is not stage:
            raise ProtocolError(f"the server cannot {action} at stage {self._stage.name.lower()}")

    def _check_sender(self, sender: int, claimed: int, what: str, seen: Container[int]) -> None:
        if sender != claimed:
            raise ProtocolError(
                f"a {what} from {self.session.name(sender)} claims to come from index {claimed}"
            )
        if sender in seen:
            raise ProtocolError(f"{self.session.name(sender)} sent a second {what}")

    # -- round 0 -----------------------------------------------------------------------------

    def receive_keys(self, sender: int, message: AdvertiseKeys) -> None:
        """Round 0: record a client's public keys (``sender`` as the transport authenticated)."""
        self._expect(_ServerStage.KEYS, "receive keys")
        if not 0 <= sender < self.session.params.n:
            raise ProtocolError(f"index {sender} is not a client of this round")
        self._check_sender(sender, message.sender, "AdvertiseKeys", self._keys)
        self._keys[sender] = message

    def route_keys(self) -> dict[int, NeighbourKeys]:
        """Close round 0: each advertising client gets its advertising neighbours' keys."""
        self._expect(_ServerStage.KEYS, "route keys")
        self._stage = _ServerStage.SHARES
        graph = self.session.graph
        out = {}
        for u in sorted(self._keys):
            peers = tuple(v for v in graph.neighbours(u) if v in self._keys)
            self._routed[u] = peers
            keys = tuple(
                PeerKeys(v, self._keys[v].encryption_key, self._keys[v].masking_key) for v in peers
            )
            out[u] = NeighbourKeys(u, keys)
        return out

    # -- round 1 -----------------------------------------------------------------------------

    def receive_shares(self, sender: int, message: ShareKeys) -> None:
        """Round 1: record a client's sealed shares; they must address exactly the neighbours
        whose keys it was sent."""
        self._expect(_ServerStage.SHARES, "receive shares")
        if sender not in self._routed:
            raise ProtocolError(f"{self.session.name(sender)} sent shares without keys")
        self._check_sender(sender, message.sender, "ShareKeys", self._shares)
        if sorted(s.peer for s in message.shares) != list(self._routed[sender]):
            raise ProtocolError(
                f"{self.session.name(sender)} sent shares for other clients than the "
                "neighbours whose keys it received"
            )
        self._shares[sender] = message

    def route_shares(self) -> dict[int, ForwardedShares]:
        """Close round 1: each client that shared gets the shares addressed to it by the
        others that shared."""
        self._expect(_ServerStage.SHARES, "route shares")
        self._stage = _ServerStage.MASKED
        inbox: dict[int, list[EncryptedShare]] = {u: [] for u in self._shares}
        for u in sorted(self._shares):
            for item in self._shares[u].shares:
                if item.peer in inbox:
                    inbox[item.peer].append(EncryptedShare(u, item.sealed))
        return {v: ForwardedShares(v, tuple(items)) for v, items in inbox.items()}

    # -- round 2 -----------------------------------------------------------------------------

    def receive_masked_input(self, sender: int, message: MaskedInput) -> None:
        """Round 2: add a masked input to the running sum."""
        self._expect(_ServerStage.MASKED, "receive masked inputs")
        if sender not in self._shares:
            raise ProtocolError(f"{self.session.name(sender)} sent a masked input without shares")
        self._check_sender(sender, message.sender, "MaskedInput", self._survivors)
        vector = message.vector
        if vector.shape != self._acc.shape or vector.dtype.itemsize != self._acc.dtype.itemsize:
            raise ProtocolError(
                f"{self.session.name(sender)} sent a masked input of shape {vector.shape} and "
                f"{vector.dtype.itemsize * 8}-bit words; the round's is {self._acc.shape}, "
                f"{self._acc.dtype.itemsize * 8}-bit"
            )
        np.add(self._acc, vector.astype(self._acc.dtype, copy=False), out=self._acc)
        self._survivors.add(sender)

    def _masking_neighbours(self, u: int) -> list[int]:
        return [v for v in self.session.graph.neighbours(u) if v in self._shares]

    def request_unmasking(self) -> dict[int, UnmaskRequest]:
        """Close round 2: ask each client that sent a masked input for the shares of its
        neighbours — self-mask-seed shares of survivors, masking-key shares of the dropped."""
        self._expect(_ServerStage.MASKED, "request unmasking")
        self._stage = _ServerStage.UNMASK
        if not self._survivors:
            raise ProtocolError("no client sent a masked input")
        for u in sorted(self._survivors):
            neighbours = self._masking_neighbours(u)
            survivors = tuple(v for v in neighbours if v in self._survivors)
            dropped = tuple(v for v in neighbours if v not in self._survivors)
            self._requests[u] = UnmaskRequest(u, survivors, dropped)
        return dict(self._requests)

    # -- round 3 -----------------------------------------------------------------------------

    def receive_unmask_response(self, sender: int, message: UnmaskResponse) -> None:
        """Round 3: record the shares a client revealed; they must answer its request."""
        self._expect(_ServerStage.UNMASK, "receive unmasking responses")
        if sender not in self._requests:
            raise ProtocolError(f"{self.session.name(sender)} was not asked to unmask")
        self._check_sender(sender, message.sender, "UnmaskResponse", self._responses)
        request = self._requests[sender]
        if (
            tuple(s.owner for s in message.seed_shares) != request.survivors
            or tuple(s.owner for s in message.key_shares) != request.dropped
        ):
            raise ProtocolError(
                f"{self.session.name(sender)} answered a different unmasking request"
            )
        self._responses[sender] = message

    def finish(self) -> ServerOutput:
        """Close round 3: rebuild the secrets, remove the masks, decode the sum.

        Raises
        ------
        ProtocolError
            If fewer than ``t`` neighbours of some client answered (the message names every
            such client), so its mask cannot be removed.
        SecurityError
            If a rebuilt masking key does not match the public key its owner advertised.
        """
        self._expect(_ServerStage.UNMASK, "finish")
        self._stage = _ServerStage.DONE
        params, session = self.session.params, self.session
        seed_shares: dict[int, dict[int, Share]] = {}
        key_shares: dict[int, dict[int, Share]] = {}
        for w, response in self._responses.items():
            for item in response.seed_shares:
                seed_shares.setdefault(item.owner, {})[w + 1] = item.share
            for item in response.key_shares:
                key_shares.setdefault(item.owner, {})[w + 1] = item.share
        survivors = sorted(self._survivors)
        dropped = sorted(set(self._shares) - self._survivors)
        got = {v: len(seed_shares.get(v, {})) for v in survivors}
        got.update({v: len(key_shares.get(v, {})) for v in dropped})
        short = sorted(v for v, count in got.items() if count < params.t)
        if short:
            counts = ", ".join(f"index {v}: {got[v]}" for v in short[:_MAX_NAMED])
            raise ProtocolError(
                f"cannot unmask {session.names(short)}: fewer than t={params.t} of their "
                f"neighbours returned shares ({counts})"
            )
        total = self._acc.copy()
        for v in survivors:
            seed = self._rebuild(seed_shares[v], v, "self-mask seed")
            prg_add(total, session.self_mask_seed(seed, v), -1)
        for v in dropped:
            private = load_private(self._rebuild(key_shares[v], v, "masking key"))
            if private.public != self._keys[v].masking_key:
                raise SecurityError(
                    f"the masking key rebuilt for {session.name(v)} does not match the public "
                    "key it advertised (corrupted shares)"
                )
            for u in self._masking_neighbours(v):
                if u in self._survivors:
                    seed = session.pairwise_seed(private, self._keys[u].masking_key, v, u)
                    prg_add(total, seed, -_sign(u, v))
        decoded = decode_fixed_point(
            total, fixed_point_bits=params.fixed_point_bits, modulus_bits=params.modulus_bits
        )
        excluded = tuple(u for u in range(params.n) if u not in self._survivors)
        return ServerOutput(decoded, total, tuple(survivors), excluded)

    def _rebuild(self, shares: Mapping[int, Share], owner: int, what: str) -> bytes:
        try:
            return shamir_reconstruct(shares, self.session.params.t)
        except ValidationError:
            raise SecurityError(
                f"the {what} rebuilt for {self.session.name(owner)} is not a 32-byte secret "
                "(corrupted shares)"
            ) from None
