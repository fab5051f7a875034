"""Shamir secret sharing (Shamir 1979) over the prime field GF(2^130 - 5).

A secret ``s`` becomes the constant term of a random polynomial ``f`` of degree ``t - 1``;
the share of the party with evaluation point ``x != 0`` is ``f(x)``. Any ``t`` shares give
``s = f(0)`` by Lagrange interpolation; any ``t - 1`` are uniformly distributed whatever ``s``
(for each value of the missing share there is exactly one polynomial through it, the
``t - 1`` shares and ``(0, s)``), so they reveal nothing.

The protocol shares 32-byte secrets (an X25519 private key, a self-mask seed). A 32-byte
secret is split into two 16-byte limbs (little-endian integers ``< 2^128 < p``), each shared
with its own polynomial at the same points, so a share is two field elements, 17 bytes each
on the wire (:data:`ELEMENT_BYTES`). ``p = 2^130 - 5`` is the Poly1305 prime.

Randomness comes from an explicit ``entropy`` callable (``n -> n random bytes``); field
elements are drawn by rejection sampling of 130-bit strings, so they are exactly uniform.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from velocity.errors import ValidationError

__all__ = [
    "ELEMENT_BYTES",
    "LIMB_BYTES",
    "PRIME",
    "SECRET_BYTES",
    "Share",
    "lagrange_at_zero",
    "random_element",
    "reconstruct_element",
    "shamir_reconstruct",
    "shamir_share",
    "share_element",
]

PRIME: Final = (1 << 130) - 5
"""The field modulus: the Poly1305 prime ``2^130 - 5``."""
ELEMENT_BYTES: Final = 17
"""Bytes of one field element on the wire (little-endian, ``< PRIME``)."""
LIMB_BYTES: Final = 16
SECRET_BYTES: Final = 32
"""The protocol's secrets are 32 bytes: two limbs, so a share is two elements."""

Share = tuple[int, ...]
"""One party's share of a multi-limb secret: one field element per limb."""


def random_element(entropy: Callable[[int], bytes], prime: int = PRIME) -> int:
    """A uniform element of ``GF(prime)`` (rejection sampling of ``prime.bit_length()`` bits).

    >>> import os
    >>> 0 <= random_element(os.urandom) < PRIME
    True
    """
    bits = prime.bit_length()
    nbytes = (bits + 7) // 8
    while True:
        value = int.from_bytes(entropy(nbytes), "little") & ((1 << bits) - 1)
        if value < prime:
            return value


def _check_points(points: Sequence[int], threshold: int, prime: int) -> None:
    if not 1 <= threshold <= len(points):
        raise ValidationError(
            f"Shamir sharing needs 1 <= threshold <= number of points; got threshold="
            f"{threshold}, {len(points)} points"
        )
    if len(set(points)) != len(points) or any(not 0 < x < prime for x in points):
        raise ValidationError("Shamir evaluation points must be distinct and in [1, prime - 1]")


def share_element(
    secret: int,
    points: Sequence[int],
    threshold: int,
    entropy: Callable[[int], bytes],
    prime: int = PRIME,
) -> dict[int, int]:
    """Shares of one field element: ``{x: f(x)}`` for a random ``f`` of degree ``t - 1``.

    Examples
    --------
    >>> import os
    >>> shares = share_element(42, [1, 2, 3], 2, os.urandom)
    >>> reconstruct_element({x: shares[x] for x in (1, 3)}, 2)
    42
    """
    _check_points(points, threshold, prime)
    if not 0 <= secret < prime:
        raise ValidationError("a Shamir secret must be a field element in [0, prime - 1]")
    coefficients = [secret] + [random_element(entropy, prime) for _ in range(threshold - 1)]
    return {x: _evaluate(coefficients, x, prime) for x in points}


def _evaluate(coefficients: Sequence[int], x: int, prime: int) -> int:
    acc = 0
    for c in reversed(coefficients):
        acc = (acc * x + c) % prime
    return acc


def lagrange_at_zero(points: Sequence[int], prime: int = PRIME) -> list[int]:
    """The Lagrange coefficients ``l_i(0) = prod_{j != i} x_j / (x_j - x_i)`` mod ``prime``.

    The points are small integers, so numerators and denominators are exact integer products
    (``math.prod``) reduced once, and the t denominators are inverted together with one
    modular inversion (Montgomery's trick).

    >>> lagrange_at_zero([1, 2], prime=7)  # f(0) = 2 f(1) - f(2)
    [2, 6]
    """
    total = math.prod(points)
    numerators = [total // x % prime for x in points]
    denominators = [math.prod([xj - xi for xj in points if xj != xi]) % prime for xi in points]
    return [
        n * d % prime for n, d in zip(numerators, _batch_inverse(denominators, prime), strict=True)
    ]


def _batch_inverse(values: Sequence[int], prime: int) -> list[int]:
    """The inverses of non-zero ``values`` mod ``prime`` with a single ``pow(., -1, prime)``."""
    prefix = [1]
    for v in values:
        prefix.append(prefix[-1] * v % prime)
    inverse = pow(prefix[-1], -1, prime)
    out = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i] = inverse * prefix[i] % prime
        inverse = inverse * values[i] % prime
    return out


def reconstruct_element(shares: Mapping[int, int], threshold: int, prime: int = PRIME) -> int:
    """``f(0)`` from at least ``threshold`` shares ``{x: f(x)}`` (the ``threshold`` smallest
    points are used).

    Raises
    ------
    ValidationError
        If fewer than ``threshold`` shares are given.
    """
    points = _chosen_points(shares, threshold, prime)
    weights = lagrange_at_zero(points, prime)
    return sum(w * shares[x] for w, x in zip(weights, points, strict=True)) % prime


def _chosen_points(shares: Mapping[int, object], threshold: int, prime: int) -> list[int]:
    if len(shares) < threshold:
        raise ValidationError(
            f"Shamir reconstruction needs at least t={threshold} shares; got {len(shares)}"
        )
    points = sorted(shares)[:threshold]
    if any(not 0 < x < prime for x in points):
        raise ValidationError("Shamir evaluation points must be in [1, prime - 1]")
    return points


def shamir_share(
    secret: bytes, points: Sequence[int], threshold: int, entropy: Callable[[int], bytes]
) -> dict[int, Share]:
    """Shares of a 32-byte secret for the parties at ``points`` (any ``threshold`` rebuild it).

    Parameters
    ----------
    secret : bytes
        Exactly 32 bytes.
    points : sequence of int
        Distinct evaluation points in ``[1, PRIME - 1]`` (the protocol uses client index + 1).
    threshold : int
        ``t``, in ``[1, len(points)]``.
    entropy : callable
        ``n -> n`` random bytes (``os.urandom``, or a seeded stream for tests).

    Returns
    -------
    dict
        ``{x: (f_1(x), f_2(x))}``, one element per 16-byte limb.

    Examples
    --------
    >>> import os
    >>> key = bytes(range(32))
    >>> shares = shamir_share(key, [1, 2, 3, 4, 5], 3, os.urandom)
    >>> shamir_reconstruct({x: shares[x] for x in (2, 4, 5)}, 3) == key
    True
    """
    if not isinstance(secret, bytes) or len(secret) != SECRET_BYTES:
        raise ValidationError(f"a Shamir secret here must be {SECRET_BYTES} bytes")
    limbs = [
        int.from_bytes(secret[i : i + LIMB_BYTES], "little")
        for i in range(0, SECRET_BYTES, LIMB_BYTES)
    ]
    per_limb = [share_element(limb, points, threshold, entropy) for limb in limbs]
    return {x: tuple(shares[x] for shares in per_limb) for x in points}


def shamir_reconstruct(shares: Mapping[int, Share], threshold: int) -> bytes:
    """The 32-byte secret from at least ``threshold`` shares ``{x: (f_1(x), f_2(x))}``.

    Raises
    ------
    ValidationError
        If fewer than ``threshold`` shares are given or a share has the wrong number of limbs.

    Examples
    --------
    >>> shamir_reconstruct({1: (5, 6)}, 2)
    Traceback (most recent call last):
        ...
    velocity.errors.ValidationError: Shamir reconstruction needs at least t=2 shares; got 1
    """
    points = _chosen_points(shares, threshold, PRIME)
    limb_count = SECRET_BYTES // LIMB_BYTES
    if any(len(shares[x]) != limb_count for x in points):
        raise ValidationError(f"a share of a {SECRET_BYTES}-byte secret has {limb_count} limbs")
    weights = lagrange_at_zero(points, PRIME)
    out = b""
    for limb in range(limb_count):
        value = sum(w * shares[x][limb] for w, x in zip(weights, points, strict=True)) % PRIME
        if value >= 1 << (8 * LIMB_BYTES):
            raise ValidationError("the shares do not encode a 32-byte secret (inconsistent)")
        out += value.to_bytes(LIMB_BYTES, "little")
    return out
