"""Fixed-point encoding of real vectors into the masking group Z_{2^b}.

A client's float vector ``x`` becomes a vector of integers modulo ``2^b`` (``b`` is
``modulus_bits``, 32 or 64, so that numpy's ``uint32``/``uint64`` wrap-around *is* the
reduction): clip every coordinate to ``[-c, c]``, scale by ``2^f`` (``f`` is
``fixed_point_bits``), round to an integer ``q`` and store ``q mod 2^b`` (two's complement).
The server adds the masked vectors modulo ``2^b``; the masks cancel and what remains is
``sum_u q_u mod 2^b``. Read as a signed ``b``-bit integer this is exactly ``sum_u q_u`` as long
as ``|sum_u q_u| < 2^(b-1)``, which :func:`check_sum_capacity` guarantees from the parameters:
``|q_u| <= ceil(c * 2^f)``, so ``n * ceil(c * 2^f) < 2^(b-1)`` suffices.

Rounding
--------
``"stochastic"``
    ``q = floor(v * 2^f + U)``, ``U ~ Uniform[0, 1)`` drawn from an explicit
    :class:`numpy.random.Generator`. Unbiased (``E[q] = v * 2^f``); per coordinate
    ``|q / 2^f - v| < 2^-f``. Deterministic given the generator's seed.
``"nearest"``
    ``q = round(v * 2^f)`` (half to even); ``|q / 2^f - v| <= 2^-(f+1)``. Biased towards
    the grid but needs no randomness.

For a sum of ``m`` clients whose inputs lie in ``[-c, c]`` the decoded sum is therefore within
``m * 2^-f`` (stochastic) or ``m * 2^-(f+1)`` (nearest) of the exact sum of the inputs, per
coordinate (:func:`rounding_error_bound`); coordinates outside ``[-c, c]`` additionally lose
what clipping removed.
"""

from __future__ import annotations

import math
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import NDArray

from velocity.errors import ConfigurationError, ValidationError

__all__ = [
    "MODULUS_BITS",
    "ROUNDINGS",
    "Rounding",
    "check_sum_capacity",
    "decode_fixed_point",
    "encode_fixed_point",
    "mask_dtype",
    "rounding_error_bound",
]

Rounding = Literal["stochastic", "nearest"]
ROUNDINGS: Final = ("stochastic", "nearest")
MODULUS_BITS: Final = (32, 64)
"""The supported masking moduli ``2^b``: one numpy unsigned dtype each."""

MaskVector = NDArray[np.unsignedinteger[Any]]


def mask_dtype(modulus_bits: int) -> np.dtype[np.unsignedinteger[Any]]:
    """The little-endian unsigned dtype that holds Z_{2^b}: ``<u4`` for 32, ``<u8`` for 64.

    >>> mask_dtype(32).itemsize, mask_dtype(64).itemsize
    (4, 8)
    """
    if modulus_bits not in MODULUS_BITS:
        raise ConfigurationError(f"modulus_bits must be one of 32, 64; got {modulus_bits!r}")
    dtype: np.dtype[np.unsignedinteger[Any]] = np.dtype("<u4" if modulus_bits == 32 else "<u8")
    return dtype


def max_abs_encoded(clip: float, fixed_point_bits: int) -> int:
    """The largest ``|q|`` one client's encoding can hold: ``ceil(clip * 2^f)``."""
    return math.ceil(clip * 2.0**fixed_point_bits)


def check_sum_capacity(n: int, clip: float, fixed_point_bits: int, modulus_bits: int) -> None:
    """Refuse parameters whose sum of ``n`` encodings could wrap around ``2^b``.

    The decoded sum is exact iff ``n * ceil(clip * 2^f) < 2^(b-1)``.

    Raises
    ------
    ConfigurationError
        Naming ``n``, ``clip``, ``fixed_point_bits`` and ``modulus_bits`` when the bound fails.

    Examples
    --------
    >>> check_sum_capacity(1000, 1.0, 20, 32)
    >>> check_sum_capacity(5000, 1.0, 20, 32)
    Traceback (most recent call last):
        ...
    velocity.errors.ConfigurationError: a sum of n=5000 encodings with clip=1.0 and \
fixed_point_bits=20 can reach 5000 * 1048576 = 5242880000 >= 2^31 = 2147483648 and wrap \
around modulus_bits=32; lower clip or fixed_point_bits, or use modulus_bits=64
    """
    q = max_abs_encoded(clip, fixed_point_bits)
    limit = 1 << (modulus_bits - 1)
    if n * q >= limit:
        raise ConfigurationError(
            f"a sum of n={n} encodings with clip={clip} and fixed_point_bits={fixed_point_bits} "
            f"can reach {n} * {q} = {n * q} >= 2^{modulus_bits - 1} = {limit} and wrap around "
            f"modulus_bits={modulus_bits}; lower clip or fixed_point_bits"
            + (", or use modulus_bits=64" if modulus_bits < 64 else "")
        )


def rounding_error_bound(m: int, fixed_point_bits: int, rounding: str) -> float:
    """Per-coordinate bound on ``|decoded sum - sum of inputs|`` for ``m`` in-range inputs.

    ``m * 2^-f`` for stochastic rounding (a strict bound), ``m * 2^-(f+1)`` for nearest.

    >>> rounding_error_bound(100, 16, "stochastic") == 100 / 2**16
    True
    >>> rounding_error_bound(100, 16, "nearest") == 100 / 2**17
    True
    """
    step = 2.0**-fixed_point_bits
    return m * (step if rounding == "stochastic" else step / 2)


def encode_fixed_point(
    x: NDArray[np.floating[Any]],
    *,
    clip: float,
    fixed_point_bits: int,
    modulus_bits: int,
    rounding: str = "stochastic",
    rng: np.random.Generator | None = None,
) -> MaskVector:
    """``x`` clipped to ``[-clip, clip]``, scaled by ``2^f``, rounded, as Z_{2^b} elements.

    Parameters
    ----------
    x : ndarray, shape (d,)
        A finite float vector (float32 or float64; computed in float64, where scaling a
        float32 by a power of two is exact).
    clip, fixed_point_bits, modulus_bits
        ``c``, ``f`` and ``b`` of the module docstring.
    rounding : {"stochastic", "nearest"}
        See the module docstring.
    rng : numpy.random.Generator, optional
        The source of the stochastic-rounding offsets; required for ``"stochastic"``.

    Returns
    -------
    ndarray of uint32 or uint64, shape (d,)
        ``q mod 2^b``.

    Raises
    ------
    ValidationError
        If ``x`` is not a 1-D array or has a NaN or infinite entry.
    ConfigurationError
        If ``rounding`` is unknown, or stochastic without ``rng``.

    Examples
    --------
    >>> import numpy as np
    >>> enc = encode_fixed_point(np.array([0.5, -0.25, 3.0], dtype=np.float32), clip=1.0,
    ...                          fixed_point_bits=8, modulus_bits=32, rounding="nearest")
    >>> enc.tolist()
    [128, 4294967232, 256]
    """
    dtype = mask_dtype(modulus_bits)
    values = np.asarray(x, dtype=np.float64)
    if values.ndim != 1:
        raise ValidationError(f"a secure-aggregation input must be a vector (d,); got {x.shape}")
    if not np.isfinite(values).all():
        raise ValidationError("a secure-aggregation input has NaN or infinite entries")
    scaled = np.clip(values, -clip, clip) * 2.0**fixed_point_bits
    if rounding == "stochastic":
        if rng is None:
            raise ConfigurationError("rounding='stochastic' needs an explicit rng")
        q = np.floor(scaled + rng.random(values.shape[0]))
    elif rounding == "nearest":
        q = np.rint(scaled)
    else:
        raise ConfigurationError(f"rounding must be one of {ROUNDINGS}; got {rounding!r}")
    as_int = q.astype(np.int64)
    # int64 -> uint64 reinterprets the two's complement; the mask keeps the low b bits.
    wrapped = as_int.view(np.uint64) & np.uint64((1 << modulus_bits) - 1)
    return wrapped.astype(dtype)


def decode_fixed_point(
    total: MaskVector, *, fixed_point_bits: int, modulus_bits: int
) -> NDArray[np.float64]:
    """A Z_{2^b} vector read as signed ``b``-bit integers and divided by ``2^f``, in float64.

    Exact for sums within the capacity of :func:`check_sum_capacity` (up to float64 rounding
    when ``|sum| >= 2^53``, possible only with ``modulus_bits=64``).

    >>> import numpy as np
    >>> decode_fixed_point(np.array([128, 4294967232], dtype=np.uint32),
    ...                    fixed_point_bits=8, modulus_bits=32).tolist()
    [0.5, -0.25]
    """
    dtype = mask_dtype(modulus_bits)
    signed = np.asarray(total, dtype=dtype).view(np.int32 if modulus_bits == 32 else np.int64)
    out: NDArray[np.float64] = signed.astype(np.float64) * 2.0**-fixed_point_bits
    return out
