"""Shamir sharing, fixed-point encoding, the PRG, AEAD and key agreement."""

from __future__ import annotations

import itertools
import os
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velocity.errors import ConfigurationError, ProtocolError, SecurityError, ValidationError
from velocity.secagg import (
    SeededEntropy,
    decode_fixed_point,
    encode_fixed_point,
    shamir_reconstruct,
    shamir_share,
)
from velocity.secagg._crypto import (
    agree,
    derive_key,
    generate_key_pair,
    open_sealed,
    prg_vector,
    seal,
)
from velocity.secagg._field import check_sum_capacity, rounding_error_bound
from velocity.secagg._shamir import PRIME, reconstruct_element, share_element

# -- Shamir --------------------------------------------------------------------------------------


def _is_probable_prime(p: int) -> bool:
    d, r = p - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53):
        x = pow(a, d, p)
        if x in (1, p - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, p)
            if x == p - 1:
                break
        else:
            return False
    return True


def test_the_field_modulus_is_prime() -> None:
    assert PRIME == 2**130 - 5
    assert _is_probable_prime(PRIME)


@pytest.mark.parametrize(("m", "t"), [(6, 3), (6, 1), (6, 6), (5, 4)])
def test_every_t_subset_reconstructs(m: int, t: int) -> None:
    secret = os.urandom(32)
    points = [3 * i + 2 for i in range(m)]
    shares = shamir_share(secret, points, t, SeededEntropy(m, t))
    for subset in itertools.combinations(points, t):
        assert shamir_reconstruct({x: shares[x] for x in subset}, t) == secret
    assert shamir_reconstruct(shares, t) == secret  # more than t is fine too


def test_fewer_than_t_shares_are_refused() -> None:
    shares = shamir_share(bytes(32), [1, 2, 3, 4], 3, os.urandom)
    with pytest.raises(ValidationError, match=r"needs at least t=3 shares; got 2"):
        shamir_reconstruct({1: shares[1], 2: shares[2]}, 3)


def test_t_minus_one_shares_are_uniform_whatever_the_secret() -> None:
    """Perfect secrecy, exhaustively over GF(11): for every secret, the map from the random
    coefficients to the t - 1 = 2 shares at points 1, 2 is a bijection onto GF(11)^2."""
    p, t, points = 11, 3, [1, 2]
    for secret in range(p):
        seen: Counter[tuple[int, int]] = Counter()
        for a1, a2 in itertools.product(range(p), repeat=2):
            stream = iter([a1, a2])
            shares = share_element(secret, [*points, 3], t, lambda _, s=stream: bytes([next(s)]), p)
            seen[(shares[1], shares[2])] += 1
        assert len(seen) == p * p
        assert set(seen.values()) == {1}


def test_one_share_is_uniform_statistically() -> None:
    """The top byte of one share of a fixed secret, over many draws, is uniform (chi-square)."""
    entropy = SeededEntropy(5, "uniform")
    tops = [shamir_share(bytes(32), [1, 2, 3], 2, entropy)[2][0] >> 122 for _ in range(4096)]
    counts = np.bincount(tops, minlength=256)
    expected = len(tops) / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 377.0  # chi-square(255) at p = 1e-6


@settings(max_examples=40, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    m=st.integers(1, 8),
    data=st.data(),
)
def test_reconstruction_property(secret: bytes, m: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, m))
    points = data.draw(st.lists(st.integers(1, 2**32), min_size=m, max_size=m, unique=True))
    shares = shamir_share(secret, points, t, os.urandom)
    subset = data.draw(st.permutations(points))[:t]
    assert shamir_reconstruct({x: shares[x] for x in subset}, t) == secret


def test_sharing_refuses_bad_inputs() -> None:
    with pytest.raises(ValidationError, match="32 bytes"):
        shamir_share(b"short", [1, 2], 1, os.urandom)
    with pytest.raises(ValidationError, match="distinct"):
        shamir_share(bytes(32), [1, 1], 1, os.urandom)
    with pytest.raises(ValidationError, match="distinct"):
        shamir_share(bytes(32), [0, 1], 1, os.urandom)
    with pytest.raises(ValidationError, match="threshold"):
        shamir_share(bytes(32), [1, 2], 3, os.urandom)
    assert reconstruct_element(share_element(7, [5, 9], 2, os.urandom), 2) == 7


# -- fixed point ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("rounding", ["stochastic", "nearest"])
def test_decoded_sums_are_within_the_stated_error(bits: int, rounding: str) -> None:
    rng = np.random.default_rng(0)
    n, d, clip, fpb = 50, 4000, 2.0, 12
    xs = rng.uniform(-clip, clip, size=(n, d)).astype(np.float32)
    enc_rng = np.random.default_rng(1)
    total = np.zeros(d, dtype=np.uint32 if bits == 32 else np.uint64)
    for x in xs:
        total += encode_fixed_point(
            x, clip=clip, fixed_point_bits=fpb, modulus_bits=bits, rounding=rounding, rng=enc_rng
        )
    decoded = decode_fixed_point(total, fixed_point_bits=fpb, modulus_bits=bits)
    err = np.abs(decoded - xs.astype(np.float64).sum(axis=0)).max()
    bound = rounding_error_bound(n, fpb, rounding)
    assert err <= bound
    assert err > bound / 20  # the bound is not vacuous


def test_stochastic_rounding_is_unbiased_and_seeded() -> None:
    x = np.full(20000, 1 / 3, dtype=np.float64)

    def enc(seed: int) -> np.ndarray:
        return encode_fixed_point(
            x, clip=1.0, fixed_point_bits=4, modulus_bits=32, rng=np.random.default_rng(seed)
        )

    values = decode_fixed_point(enc(3), fixed_point_bits=4, modulus_bits=32)
    assert set(np.unique(values)) == {5 / 16, 6 / 16}
    assert abs(values.mean() - 1 / 3) < 4 * (1 / 16) / np.sqrt(x.size)
    assert (enc(3) == enc(3)).all()
    with pytest.raises(ConfigurationError, match="needs an explicit rng"):
        encode_fixed_point(x, clip=1.0, fixed_point_bits=4, modulus_bits=32)


def test_clipping_negative_values_and_the_capacity_edge() -> None:
    # 2 clients at +-clip with 2 * 2^29 = 2^30 < 2^31: exact; one more bit would wrap.
    for sign in (1.0, -1.0):
        x = np.full(3, 5.0 * sign)  # clipped to +-1
        e = encode_fixed_point(
            x, clip=1.0, fixed_point_bits=29, modulus_bits=32, rounding="nearest"
        )
        total = decode_fixed_point(e + e, fixed_point_bits=29, modulus_bits=32)
        assert total.tolist() == [2.0 * sign] * 3
    check_sum_capacity(2, 1.0, 29, 32)
    with pytest.raises(
        ConfigurationError, match=r"n=2 encodings with clip=1.0 and fixed_point_bits=30"
    ):
        check_sum_capacity(2, 1.0, 30, 32)


def test_non_finite_inputs_are_refused() -> None:
    with pytest.raises(ValidationError, match="NaN or infinite"):
        encode_fixed_point(
            np.array([0.0, np.nan]),
            clip=1.0,
            fixed_point_bits=8,
            modulus_bits=32,
            rounding="nearest",
        )
    with pytest.raises(ValidationError, match="vector"):
        encode_fixed_point(
            np.zeros((2, 2)), clip=1.0, fixed_point_bits=8, modulus_bits=32, rounding="nearest"
        )


# -- PRG, AEAD, key agreement --------------------------------------------------------------------


@pytest.mark.parametrize("bits", [32, 64])
def test_prg_is_deterministic_and_uniform(bits: int) -> None:
    a = prg_vector(b"\x01" * 32, 65536, bits)
    assert (a == prg_vector(b"\x01" * 32, 65536, bits)).all()
    assert not (a == prg_vector(b"\x02" * 32, 65536, bits)).all()
    top = (a >> np.uint64(bits - 4)).astype(np.int64) if bits == 64 else (a >> 28).astype(np.int64)
    counts = np.bincount(top, minlength=16)
    chi2 = float(((counts - a.size / 16) ** 2 / (a.size / 16)).sum())
    assert chi2 < 56.5  # chi-square(15) at p = 1e-6
    # a prefix of a longer stream is the shorter stream
    assert (prg_vector(b"\x01" * 32, 10, bits) == a[:10]).all()


def test_aead_round_trip_and_tampering() -> None:
    key = derive_key(b"k" * 32, session_id=bytes(32), purpose="test")
    entropy = SeededEntropy(0)
    sealed = seal(key, b"secret shares", b"ad", entropy)
    assert open_sealed(key, sealed, b"ad", what="test") == b"secret shares"
    flipped = bytearray(sealed)
    flipped[15] ^= 1
    with pytest.raises(SecurityError, match="failed authentication"):
        open_sealed(key, bytes(flipped), b"ad", what="test")
    with pytest.raises(SecurityError):
        open_sealed(key, sealed, b"other ad", what="test")
    with pytest.raises(ProtocolError, match="cannot hold"):
        open_sealed(key, sealed[:10], b"ad", what="test")


def test_key_agreement_is_symmetric_and_refuses_low_order_points() -> None:
    a, b = generate_key_pair(SeededEntropy(1)), generate_key_pair(SeededEntropy(2))
    assert agree(a, b.public, peer="b") == agree(b, a.public, peer="a")
    assert "private" not in repr(a)
    with pytest.raises(SecurityError, match="public key of mallory is invalid"):
        agree(a, bytes(32), peer="mallory")


def test_seeded_entropy_streams_are_reproducible_and_separated() -> None:
    assert SeededEntropy(3, "a")(64) == SeededEntropy(3, "a")(64)
    assert SeededEntropy(3, "a")(64) != SeededEntropy(3, "b")(64)
    s = SeededEntropy(3, "a")
    assert s(32) + s(32) == SeededEntropy(3, "a")(64)
