"""The cryptographic primitives of SecAgg+, all from the ``cryptography`` package.

- **Key agreement**: X25519 (RFC 7748). A client holds two key pairs: ``c`` encrypts the
  Shamir shares it sends its neighbours, ``s`` derives its pairwise masks.
- **Key derivation**: HKDF-SHA256 (RFC 5869) of the X25519 shared secret, salted with the
  32-byte session id, with an ``info`` string naming the purpose and the pair, so every key is
  used for one purpose, in one session, by one pair (and, for encryption, one direction).
- **Mask expansion (PRG)**: AES-256 in CTR mode keyed by a 32-byte seed, IV zero, encrypting
  zeros. The keystream is read as little-endian ``b``-bit words; since the masking modulus is
  ``2^b``, every word is an exactly uniform element of Z_{2^b} (no rejection or modular bias).
  Each seed keys one keystream of at most ``d * b / 8`` bytes, far below AES-CTR's limits.
- **Authenticated encryption**: AES-256-GCM with a random 96-bit nonce (sent in front of the
  ciphertext) and associated data binding the session, the round, the sender and the
  receiver; a failed tag check raises :class:`~velocity.errors.SecurityError`.
- **Entropy**: an explicit ``entropy(n) -> bytes`` callable everywhere. :func:`system_entropy`
  (``os.urandom``) is the default; :class:`SeededEntropy` is a reproducible AES-CTR stream for
  tests and simulations (its output is only as secret as its seed).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from numpy.typing import NDArray

from velocity.errors import ProtocolError, SecurityError
from velocity.secagg._field import mask_dtype

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "SEALED_OVERHEAD",
    "Entropy",
    "KeyPair",
    "SeededEntropy",
    "agree",
    "derive_key",
    "generate_key_pair",
    "load_private",
    "open_sealed",
    "pair_context",
    "prg_add",
    "prg_vector",
    "public_key_of",
    "seal",
    "system_entropy",
]

KEY_BYTES: Final = 32
"""X25519 keys, HKDF outputs, seeds and AES-256 keys are all 32 bytes."""
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
SEALED_OVERHEAD: Final = NONCE_BYTES + TAG_BYTES
"""A sealed message is ``nonce (12) | ciphertext | tag (16)``: 28 bytes more than its text."""
_DOMAIN: Final = b"velocity-secagg/v1/"

Entropy = Callable[[int], bytes]
"""A source of randomness: ``entropy(n)`` returns ``n`` fresh random bytes."""


def system_entropy(n: int) -> bytes:
    """``n`` bytes from the operating system's CSPRNG (:func:`os.urandom`).

    >>> len(system_entropy(32))
    32
    """
    return os.urandom(n)


class SeededEntropy:
    """A reproducible byte stream: AES-256-CTR keyed by SHA-256 of ``(seed, *keys)``.

    Two streams with the same ``seed`` and ``keys`` give the same bytes; different keys give
    independent streams (``SeededEntropy(seed, "client", "c07")``). For tests and
    simulations only: anyone who knows the seed knows every key drawn from it.

    >>> a, b = SeededEntropy(0, "x"), SeededEntropy(0, "x")
    >>> a(5) == b(5), a(3) == SeededEntropy(0, "y")(3)
    (True, False)
    """

    def __init__(self, seed: int, *keys: int | str) -> None:
        text = "\x1f".join([str(int(seed)), *(f"{type(k).__name__}:{k}" for k in keys)])
        key = hashlib.sha256(_DOMAIN + b"entropy\x1f" + text.encode()).digest()
        self._stream = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()

    def __call__(self, n: int) -> bytes:
        return self._stream.update(bytes(n))


@dataclass(frozen=True, repr=False)
class KeyPair:
    """An X25519 key pair: raw bytes (32 each) and the loaded private key.

    ``repr`` never shows the private key.
    """

    private: bytes
    public: bytes
    key: X25519PrivateKey

    def __repr__(self) -> str:
        return f"KeyPair(public={self.public.hex()[:16]}...)"


def load_private(private: bytes) -> KeyPair:
    """The key pair of a raw 32-byte X25519 private key (X25519 clamps it itself)."""
    key = X25519PrivateKey.from_private_bytes(private)
    return KeyPair(private=private, public=key.public_key().public_bytes_raw(), key=key)


def generate_key_pair(entropy: Entropy) -> KeyPair:
    """A fresh X25519 key pair from 32 bytes of ``entropy``.

    >>> pair = generate_key_pair(SeededEntropy(1))
    >>> len(pair.private), len(pair.public)
    (32, 32)
    """
    return load_private(entropy(KEY_BYTES))


def public_key_of(private: bytes) -> bytes:
    """The raw X25519 public key of a raw private key."""
    return load_private(private).public


def agree(private: KeyPair, peer_public: bytes, *, peer: str) -> bytes:
    """The X25519 shared secret of ``private`` and ``peer_public``.

    Raises
    ------
    SecurityError
        If ``peer_public`` is a low-order point (the shared secret would be all zeros);
        ``peer`` names the peer in the message.
    """
    try:
        return private.key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise SecurityError(f"the public key of {peer} is invalid: {exc}") from None


def derive_key(secret: bytes, *, session_id: bytes, purpose: str, context: bytes = b"") -> bytes:
    """HKDF-SHA256 of ``secret`` to 32 bytes, salt ``session_id``, info naming the purpose.

    >>> k1 = derive_key(bytes(32), session_id=bytes(32), purpose="mask")
    >>> k1 == derive_key(bytes(32), session_id=bytes(32), purpose="share")
    False
    """
    info = _DOMAIN + purpose.encode() + b"\x00" + context
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=session_id, info=info)
    return hkdf.derive(secret)


def pair_context(a: int, b: int) -> bytes:
    """The bytes naming an ordered pair of client indices in key derivation and AAD."""
    return struct.pack("<II", a, b)


def prg_vector(seed: bytes, d: int, modulus_bits: int) -> NDArray[np.unsignedinteger[Any]]:
    """``d`` uniform elements of Z_{2^b}: the AES-256-CTR keystream of ``seed``.

    >>> v = prg_vector(bytes(32), 4, 32)
    >>> v.dtype.name, v.shape, bool((v == prg_vector(bytes(32), 4, 32)).all())
    ('uint32', (4,), True)
    """
    dtype = mask_dtype(modulus_bits)
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    stream = encryptor.update(bytes(d * dtype.itemsize))
    out: NDArray[np.unsignedinteger[Any]] = np.frombuffer(stream, dtype=dtype)
    return out


def prg_add(acc: NDArray[np.unsignedinteger[Any]], seed: bytes, sign: int) -> None:
    """``acc += sign * PRG(seed)`` modulo ``2^b``, in place (``sign`` is +1 or -1)."""
    mask = prg_vector(seed, acc.shape[0], acc.dtype.itemsize * 8)
    if sign > 0:
        np.add(acc, mask, out=acc)
    else:
        np.subtract(acc, mask, out=acc)


def seal(key: bytes, plaintext: bytes, associated: bytes, entropy: Entropy) -> bytes:
    """AES-256-GCM: ``nonce | ciphertext | tag`` with a fresh random 12-byte nonce."""
    nonce = entropy(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, sealed: bytes, associated: bytes, *, what: str) -> bytes:
    """The plaintext of :func:`seal`'s output.

    Raises
    ------
    SecurityError
        If the tag does not verify (tampered ciphertext, wrong key, wrong associated data);
        ``what`` names the message.
    ProtocolError
        If ``sealed`` is too short to hold a nonce and a tag.
    """
    if len(sealed) < SEALED_OVERHEAD:
        raise ProtocolError(f"{what}: {len(sealed)} bytes cannot hold a nonce and a tag")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
    except InvalidTag:
        raise SecurityError(f"{what} failed authentication (tampered or misaddressed)") from None
