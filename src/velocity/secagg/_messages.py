"""The messages of a SecAgg+ round and their byte layout on the wire (never pickle).

Every message is a frozen dataclass with ``to_bytes()``; :func:`decode_message` turns bytes
back into one, checking the type tag, every count against the round's limits, every index,
every length, and that the total size is exactly what the counts imply — a refusal is a
:class:`~velocity.errors.ProtocolError`. Integers are little-endian ``uint32``; keys are raw
32-byte X25519 public keys; a field element is 17 little-endian bytes (``< 2^130 - 5``).

Layouts and sizes (``m`` = entries, ``d`` = vector length, ``w = b / 8`` bytes per masked
coordinate)::

    AdvertiseKeys    tag | sender | c_pk(32) | s_pk(32)                         69
    NeighbourKeys    tag | recipient | m | m x (index | c_pk | s_pk)           9 + 68 m
    ShareKeys        tag | sender | m | m x (recipient | sealed(96))           9 + 100 m
    ForwardedShares  tag | recipient | m | m x (sender | sealed(96))           9 + 100 m
    MaskedInput      tag | sender | d | d x w                                  9 + w d
    UnmaskRequest    tag | recipient | a | b | a x survivor | b x dropped      13 + 4 (a + b)
    UnmaskResponse   tag | sender | a | b | a x (owner | share) | b x (...)    13 + 38 (a + b)

A sealed share is ``nonce(12) | AES-GCM(b-share(34) | s-share(34)) | tag(16)`` = 96 bytes; a
revealed share is its owner's index and two field elements (4 + 34 = 38 bytes).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from velocity.errors import ProtocolError
from velocity.secagg._crypto import KEY_BYTES, SEALED_OVERHEAD
from velocity.secagg._field import mask_dtype
from velocity.secagg._shamir import ELEMENT_BYTES, PRIME, Share

__all__ = [
    "SEALED_SHARE_BYTES",
    "SHARE_PLAINTEXT_BYTES",
    "SHARE_WIRE_BYTES",
    "AdvertiseKeys",
    "EncryptedShare",
    "ForwardedShares",
    "MaskedInput",
    "Message",
    "MessageType",
    "NeighbourKeys",
    "PeerKeys",
    "RevealedShare",
    "ShareKeys",
    "UnmaskRequest",
    "UnmaskResponse",
    "decode_message",
    "decode_share",
    "encode_share",
    "no_dropout_traffic",
]

LIMBS: Final = 2
SHARE_WIRE_BYTES: Final = LIMBS * ELEMENT_BYTES
"""One share of a 32-byte secret on the wire: two field elements, 34 bytes."""
SHARE_PLAINTEXT_BYTES: Final = 2 * SHARE_WIRE_BYTES
"""What a client seals for a neighbour: its self-mask-seed share and masking-key share."""
SEALED_SHARE_BYTES: Final = SHARE_PLAINTEXT_BYTES + SEALED_OVERHEAD
_U32: Final = struct.Struct("<I")
_HEAD: Final = struct.Struct("<BII")  # tag, sender or recipient, count
_HEAD2: Final = struct.Struct("<BIII")  # tag, sender or recipient, count a, count b


class MessageType(IntEnum):
    """The one-byte tag that starts every message."""

    ADVERTISE_KEYS = 1
    NEIGHBOUR_KEYS = 2
    SHARE_KEYS = 3
    FORWARDED_SHARES = 4
    MASKED_INPUT = 5
    UNMASK_REQUEST = 6
    UNMASK_RESPONSE = 7


def encode_share(share: Share) -> bytes:
    """A share's two field elements as 34 bytes."""
    return b"".join(int(v).to_bytes(ELEMENT_BYTES, "little") for v in share)


def decode_share(data: bytes, *, what: str) -> Share:
    """The share held in 34 bytes; refuses a non-canonical element (``>= 2^130 - 5``)."""
    if len(data) != SHARE_WIRE_BYTES:
        raise ProtocolError(f"{what}: a share is {SHARE_WIRE_BYTES} bytes; got {len(data)}")
    out = tuple(
        int.from_bytes(data[i : i + ELEMENT_BYTES], "little")
        for i in range(0, SHARE_WIRE_BYTES, ELEMENT_BYTES)
    )
    if any(v >= PRIME for v in out):
        raise ProtocolError(f"{what}: a share element is not below the field prime")
    return out


def _check_key(key: bytes, what: str) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise ProtocolError(f"{what} must be {KEY_BYTES} raw bytes")


def _check_index(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise ProtocolError(f"{what} must be a uint32 client index; got {value!r}")


def _check_unique(indices: list[int], what: str) -> None:
    if len(set(indices)) != len(indices):
        raise ProtocolError(f"{what} names a client twice")


@dataclass(frozen=True)
class PeerKeys:
    """A neighbour's two public keys, as the server forwards them."""

    index: int
    encryption_key: bytes
    masking_key: bytes

    def __post_init__(self) -> None:
        _check_index(self.index, "PeerKeys.index")
        _check_key(self.encryption_key, "PeerKeys.encryption_key")
        _check_key(self.masking_key, "PeerKeys.masking_key")


@dataclass(frozen=True)
class EncryptedShare:
    """A sealed pair of shares; ``peer`` is the recipient (client→server) or the sender
    (server→client)."""

    peer: int
    sealed: bytes

    def __post_init__(self) -> None:
        _check_index(self.peer, "EncryptedShare.peer")
        if not isinstance(self.sealed, bytes) or len(self.sealed) != SEALED_SHARE_BYTES:
            raise ProtocolError(f"a sealed share must be {SEALED_SHARE_BYTES} bytes")


@dataclass(frozen=True)
class RevealedShare:
    """A share a client reveals in the unmasking round: ``owner``'s secret, at this client's
    evaluation point."""

    owner: int
    share: Share

    def __post_init__(self) -> None:
        _check_index(self.owner, "RevealedShare.owner")
        if len(self.share) != LIMBS or any(not 0 <= int(v) < PRIME for v in self.share):
            raise ProtocolError("RevealedShare.share must be two field elements")


@dataclass(frozen=True)
class AdvertiseKeys:
    """Round 0, client → server: the client's two public keys."""

    sender: int
    encryption_key: bytes
    masking_key: bytes

    def __post_init__(self) -> None:
        _check_index(self.sender, "AdvertiseKeys.sender")
        _check_key(self.encryption_key, "AdvertiseKeys.encryption_key")
        _check_key(self.masking_key, "AdvertiseKeys.masking_key")

    def to_bytes(self) -> bytes:
        """``tag | sender | c_pk | s_pk`` (69 bytes)."""
        head = struct.pack("<BI", MessageType.ADVERTISE_KEYS, self.sender)
        return head + self.encryption_key + self.masking_key


@dataclass(frozen=True)
class NeighbourKeys:
    """Round 0 → 1, server → client: the public keys of the recipient's graph neighbours
    that advertised."""

    recipient: int
    keys: tuple[PeerKeys, ...]

    def __post_init__(self) -> None:
        _check_index(self.recipient, "NeighbourKeys.recipient")
        _check_unique([k.index for k in self.keys], "NeighbourKeys")

    def to_bytes(self) -> bytes:
        """``tag | recipient | m | m x (index | c_pk | s_pk)``."""
        head = _HEAD.pack(MessageType.NEIGHBOUR_KEYS, self.recipient, len(self.keys))
        body = b"".join(_U32.pack(k.index) + k.encryption_key + k.masking_key for k in self.keys)
        return head + body


@dataclass(frozen=True)
class ShareKeys:
    """Round 1, client → server: one sealed share pair per neighbour (``peer`` = recipient)."""

    sender: int
    shares: tuple[EncryptedShare, ...]

    def __post_init__(self) -> None:
        _check_index(self.sender, "ShareKeys.sender")
        _check_unique([s.peer for s in self.shares], "ShareKeys")

    def to_bytes(self) -> bytes:
        """``tag | sender | m | m x (recipient | sealed)``."""
        return _pack_sealed(MessageType.SHARE_KEYS, self.sender, self.shares)


@dataclass(frozen=True)
class ForwardedShares:
    """Round 1 → 2, server → client: the sealed shares addressed to the recipient
    (``peer`` = sender)."""

    recipient: int
    shares: tuple[EncryptedShare, ...]

    def __post_init__(self) -> None:
        _check_index(self.recipient, "ForwardedShares.recipient")
        _check_unique([s.peer for s in self.shares], "ForwardedShares")

    def to_bytes(self) -> bytes:
        """``tag | recipient | m | m x (sender | sealed)``."""
        return _pack_sealed(MessageType.FORWARDED_SHARES, self.recipient, self.shares)


def _pack_sealed(tag: MessageType, who: int, shares: tuple[EncryptedShare, ...]) -> bytes:
    head = _HEAD.pack(tag, who, len(shares))
    return head + b"".join(_U32.pack(s.peer) + s.sealed for s in shares)


@dataclass(frozen=True, eq=False)
class MaskedInput:
    """Round 2, client → server: ``y = x + PRG(b) + sum of signed pairwise masks mod 2^b``."""

    sender: int
    vector: NDArray[np.unsignedinteger[Any]]

    def __post_init__(self) -> None:
        _check_index(self.sender, "MaskedInput.sender")
        v = self.vector
        if not isinstance(v, np.ndarray) or v.ndim != 1 or v.dtype.kind != "u":
            raise ProtocolError("MaskedInput.vector must be a uint32 or uint64 vector")
        if v.dtype.itemsize not in (4, 8):
            raise ProtocolError("MaskedInput.vector must be a uint32 or uint64 vector")

    def to_bytes(self) -> bytes:
        """``tag | sender | d | d little-endian words``."""
        v = self.vector
        head = _HEAD.pack(MessageType.MASKED_INPUT, self.sender, v.shape[0])
        return head + v.astype(v.dtype.newbyteorder("<"), copy=False).tobytes()


@dataclass(frozen=True)
class UnmaskRequest:
    """Round 2 → 3, server → client: which of the recipient's neighbours survived (reveal
    their self-mask-seed shares) and which dropped (reveal their masking-key shares)."""

    recipient: int
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]

    def __post_init__(self) -> None:
        _check_index(self.recipient, "UnmaskRequest.recipient")
        for v in (*self.survivors, *self.dropped):
            _check_index(v, "UnmaskRequest entry")

    def to_bytes(self) -> bytes:
        """``tag | recipient | a | b | a survivors | b dropped``."""
        a, b = len(self.survivors), len(self.dropped)
        head = _HEAD2.pack(MessageType.UNMASK_REQUEST, self.recipient, a, b)
        return head + struct.pack(f"<{a + b}I", *self.survivors, *self.dropped)


@dataclass(frozen=True)
class UnmaskResponse:
    """Round 3, client → server: self-mask-seed shares of surviving neighbours, masking-key
    shares of dropped ones — never both for one neighbour."""

    sender: int
    seed_shares: tuple[RevealedShare, ...]
    key_shares: tuple[RevealedShare, ...]

    def __post_init__(self) -> None:
        _check_index(self.sender, "UnmaskResponse.sender")
        owners = [s.owner for s in (*self.seed_shares, *self.key_shares)]
        _check_unique(owners, "UnmaskResponse")

    def to_bytes(self) -> bytes:
        """``tag | sender | a | b | a x (owner | share) | b x (owner | share)``."""
        a, b = len(self.seed_shares), len(self.key_shares)
        head = _HEAD2.pack(MessageType.UNMASK_RESPONSE, self.sender, a, b)
        body = b"".join(
            _U32.pack(s.owner) + encode_share(s.share)
            for s in (*self.seed_shares, *self.key_shares)
        )
        return head + body


Message = (
    AdvertiseKeys
    | NeighbourKeys
    | ShareKeys
    | ForwardedShares
    | MaskedInput
    | UnmaskRequest
    | UnmaskResponse
)


class _Reader:
    """Bounded reads from one message's bytes."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.offset = 0
        self.what = what

    def take(self, size: int) -> bytes:
        end = self.offset + size
        if end > len(self.data):
            raise ProtocolError(f"{self.what}: truncated ({len(self.data)} bytes)")
        out = self.data[self.offset : end]
        self.offset = end
        return out

    def u32(self) -> int:
        value: int = _U32.unpack(self.take(4))[0]
        return value

    def index(self, n: int, label: str) -> int:
        value = self.u32()
        if value >= n:
            raise ProtocolError(f"{self.what}: {label} {value} is not a client index below {n}")
        return value

    def count(self, limit: int, entry: int, label: str) -> int:
        value = self.u32()
        if value > limit:
            raise ProtocolError(f"{self.what}: {value} {label} exceed the limit of {limit}")
        expected = self.offset + value * entry
        if expected > len(self.data):
            raise ProtocolError(f"{self.what}: {value} {label} need more bytes than were sent")
        return value

    def done(self) -> None:
        if self.offset != len(self.data):
            extra = len(self.data) - self.offset
            raise ProtocolError(f"{self.what}: {extra} unexpected trailing bytes")


def decode_message(data: bytes, *, n: int, dimension: int, modulus_bits: int) -> Message:
    """The message encoded in ``data``, for a round of ``n`` clients and vectors of length
    ``dimension`` modulo ``2^modulus_bits``.

    Raises
    ------
    ProtocolError
        For an unknown tag, a count above ``n - 1`` (or ``dimension``), an index ``>= n``,
        a duplicate entry, a non-canonical field element, or a size that is not exactly the
        layout's.

    Examples
    --------
    >>> msg = AdvertiseKeys(sender=3, encryption_key=bytes(32), masking_key=bytes(32))
    >>> wire = msg.to_bytes()
    >>> len(wire), decode_message(wire, n=10, dimension=4, modulus_bits=32) == msg
    (69, True)
    >>> decode_message(wire[:-1], n=10, dimension=4, modulus_bits=32)
    Traceback (most recent call last):
        ...
    velocity.errors.ProtocolError: AdvertiseKeys: truncated (68 bytes)
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(f"a SecAgg message must be bytes; got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ProtocolError("an empty SecAgg message")
    try:
        tag = MessageType(data[0])
    except ValueError:
        raise ProtocolError(f"unknown SecAgg message tag {data[0]}") from None
    reader = _Reader(data, tag.name.title().replace("_", ""))
    reader.take(1)
    peers = n - 1
    out: Message
    if tag is MessageType.ADVERTISE_KEYS:
        sender = reader.index(n, "sender")
        out = AdvertiseKeys(sender, reader.take(KEY_BYTES), reader.take(KEY_BYTES))
    elif tag is MessageType.NEIGHBOUR_KEYS:
        recipient = reader.index(n, "recipient")
        m = reader.count(peers, 4 + 2 * KEY_BYTES, "keys")
        keys = tuple(
            PeerKeys(reader.index(n, "neighbour"), reader.take(KEY_BYTES), reader.take(KEY_BYTES))
            for _ in range(m)
        )
        out = NeighbourKeys(recipient, keys)
    elif tag in (MessageType.SHARE_KEYS, MessageType.FORWARDED_SHARES):
        who = reader.index(n, "client")
        m = reader.count(peers, 4 + SEALED_SHARE_BYTES, "shares")
        shares = tuple(
            EncryptedShare(reader.index(n, "peer"), reader.take(SEALED_SHARE_BYTES))
            for _ in range(m)
        )
        out = (
            ShareKeys(who, shares)
            if tag is MessageType.SHARE_KEYS
            else ForwardedShares(who, shares)
        )
    elif tag is MessageType.MASKED_INPUT:
        sender = reader.index(n, "sender")
        dtype = mask_dtype(modulus_bits)
        d = reader.u32()
        if d != dimension:
            raise ProtocolError(f"MaskedInput: vector length {d}; the round's is {dimension}")
        raw = reader.take(d * dtype.itemsize)
        out = MaskedInput(sender, np.frombuffer(raw, dtype=dtype))
    elif tag is MessageType.UNMASK_REQUEST:
        recipient = reader.index(n, "recipient")
        a = reader.count(peers, 4, "survivors")
        b = reader.count(peers - a, 4, "dropped")
        survivors = tuple(reader.index(n, "survivor") for _ in range(a))
        dropped = tuple(reader.index(n, "dropped client") for _ in range(b))
        out = UnmaskRequest(recipient, survivors, dropped)
    else:
        sender = reader.index(n, "sender")
        a = reader.count(peers, 4 + SHARE_WIRE_BYTES, "seed shares")
        b = reader.count(peers - a, 4 + SHARE_WIRE_BYTES, "key shares")
        entries = tuple(
            RevealedShare(
                reader.index(n, "owner"),
                decode_share(reader.take(SHARE_WIRE_BYTES), what=reader.what),
            )
            for _ in range(a + b)
        )
        out = UnmaskResponse(sender, entries[:a], entries[a:])
    reader.done()
    return out


def no_dropout_traffic(k: int, dimension: int, modulus_bits: int) -> tuple[int, int]:
    """A client's ``(bytes sent, bytes received)`` in a round where nobody drops.

    Sent: ``69 + (9 + 100 k) + (9 + w d) + (13 + 38 k)``; received: ``(9 + 68 k) + (9 +
    100 k) + (13 + 4 k)``, with ``w = modulus_bits / 8``.

    >>> no_dropout_traffic(k=10, dimension=1000, modulus_bits=32)
    (5480, 1751)
    """
    w = modulus_bits // 8
    sent = (5 + 2 * KEY_BYTES) + (9 + (4 + SEALED_SHARE_BYTES) * k) + (9 + w * dimension)
    sent += 13 + (4 + SHARE_WIRE_BYTES) * k
    received = (9 + (4 + 2 * KEY_BYTES) * k) + (9 + (4 + SEALED_SHARE_BYTES) * k) + (13 + 4 * k)
    return sent, received
