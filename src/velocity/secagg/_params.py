"""The parameters of one SecAgg+ round, derived from a threat model with exact tail bounds.

SecAgg+ (Bell, Bonawitz, Gascón, Lepoint, Raykova, CCS 2020) replaces the complete graph of
SecAgg (Bonawitz et al., CCS 2017) by a sparse k-regular communication graph: a client masks
with, and secret-shares its keys among, only its k graph neighbours, with a Shamir threshold t.
This module picks k and t from a :class:`ThreatModel`; ``docs/secagg_design.md`` states the
model and the bounds in full. In short, with ``C = floor(corrupt_fraction * n)`` corrupt
clients placed independently of the graph's random labelling, each other client dropping
independently with probability ``dropout_rate``:

* **privacy** — an honest client u is exposed when the adversary can collect ``t`` shares of
  both its self-mask seed and its masking key. Each honest neighbour reveals at most one of
  the two (the client enforces it), the ``X`` corrupt neighbours reveal both, so exposure needs
  ``X >= 2t - k`` (a server that lies to different neighbours about whether u dropped — the
  share-splitting attack — is covered). The honest survivors must also stay connected, or the
  server learns the sums of the separate pieces; in a Harary graph that needs a run of
  ``k/2`` consecutive removed (corrupt or dropped) clients on the labelling's cycle. So
  ``P_priv <= (n - C) * P[X >= 2t - k] + n * P[k/2 given labels all removed] <= 2^-sigma``.
* **correctness** — the server recovers client u iff at least ``t`` of u's neighbours answer
  the unmasking round; corrupt neighbours are assumed to withhold their shares, honest ones
  to drop with probability ``dropout_rate``. So
  ``P_fail <= n * P[Bin(k - X, 1 - dropout_rate) < t] <= 2^-eta``.

``X`` is hypergeometric (k neighbours drawn from the other n - 1 clients, C of them
corrupt): exact pmfs in log space (:func:`math.lgamma`), tails summed from the small end.
The derived k is the smallest even degree for which some t works, and t is the smallest
that meets the privacy target (it leaves every spare share to dropout tolerance). When no
sparse degree below ``n - 1`` works, the complete graph (SecAgg, ``k = n - 1``) is used, where
``X = C`` exactly and no connectivity term is needed.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import ClassVar, Final

import numpy as np
from numpy.typing import NDArray

from velocity._validation import (
    INVALID,
    Constraint,
    Integer,
    NoneOr,
    OneOf,
    Real,
    check_parameters,
    check_value,
)
from velocity.errors import ConfigurationError
from velocity.secagg._field import (
    ROUNDINGS,
    Rounding,
    check_sum_capacity,
    max_abs_encoded,
    rounding_error_bound,
)
from velocity.secagg._shamir import PRIME

__all__ = [
    "MAX_FIXED_POINT_BITS",
    "MAX_SPARSE_DEGREE",
    "SecAggParams",
    "ThreatModel",
    "correctness_failure_bound",
    "derive_parameters",
    "privacy_failure_bound",
]

MAX_FIXED_POINT_BITS: Final = 24
""":func:`derive_parameters` never picks more fixed-point bits than a float32 mantissa holds."""
MAX_SPARSE_DEGREE: Final = 4096
"""Sparse degrees above this are not searched; the complete graph is the fallback."""


class _ModulusBits:
    """Constraint: the int 32 or 64."""

    def describe(self) -> str:
        return "32 or 64"

    def convert(self, value: object) -> object:
        ok = isinstance(value, int) and not isinstance(value, bool) and value in (32, 64)
        return value if ok else INVALID


@dataclass(frozen=True)
class ThreatModel:
    """Who may be corrupt, how many drop out, and the failure probabilities accepted.

    Parameters
    ----------
    corrupt_fraction : float
        Fraction of clients, in ``[0, 1)``, that may collude with the server (static
        corruption, chosen before the graph's randomness is drawn).
    dropout_rate : float
        Probability, in ``[0, 1)``, that a client drops out at some point of the round,
        independently of the others.
    security_bits : int
        ``sigma``: the privacy failure probability is at most ``2^-sigma`` (statistical).
    correctness_bits : int
        ``eta``: the round fails to produce the sum with probability at most ``2^-eta``.

    Notes
    -----
    The threshold must exceed ``(1 + corrupt_fraction)/2`` of a neighbourhood (share
    splitting) yet be reached by its honest survivors, about ``(1 - corrupt_fraction)(1 -
    dropout_rate)`` of it; a model where that is impossible for every n is refused.

    Examples
    --------
    >>> ThreatModel(corrupt_fraction=0.1, dropout_rate=0.1).security_bits
    40
    >>> ThreatModel(corrupt_fraction=0.3, dropout_rate=0.25)
    Traceback (most recent call last):
        ...
    velocity.errors.ConfigurationError: ThreatModel is infeasible for every n: the threshold t \
must exceed (1 + corrupt_fraction)/2 of a neighbourhood yet be met by its honest survivors, (1 \
- corrupt_fraction)(1 - dropout_rate) of it, which needs 3 corrupt_fraction + 2 dropout_rate - \
2 corrupt_fraction dropout_rate < 1 (so in particular corrupt_fraction + dropout_rate < 1/2); \
got corrupt_fraction=0.3, dropout_rate=0.25
    """

    corrupt_fraction: float
    dropout_rate: float
    security_bits: int = 40
    correctness_bits: int = 20

    _constraints: ClassVar[dict[str, Constraint]] = {
        "corrupt_fraction": Real(0, 1, high_open=True),
        "dropout_rate": Real(0, 1, high_open=True),
        "security_bits": Integer(1, 256),
        "correctness_bits": Integer(1, 128),
    }

    def __post_init__(self) -> None:
        check_parameters(self)
        g, d = self.corrupt_fraction, self.dropout_rate
        # t > (1 + g) k / 2 for privacy; about (1 - g)(1 - d) k honest survivors answer.
        if 2 * (1 - g) * (1 - d) <= 1 + g:
            raise ConfigurationError(
                "ThreatModel is infeasible for every n: the threshold t must exceed "
                "(1 + corrupt_fraction)/2 of a neighbourhood yet be met by its honest survivors, "
                "(1 - corrupt_fraction)(1 - dropout_rate) of it, which needs 3 corrupt_fraction "
                "+ 2 dropout_rate - 2 corrupt_fraction dropout_rate < 1 (so in particular "
                f"corrupt_fraction + dropout_rate < 1/2); got corrupt_fraction={g}, "
                f"dropout_rate={d}"
            )

    def corrupt_count(self, n: int) -> int:
        """``C = floor(corrupt_fraction * n)``, the number of corrupt clients among ``n``."""
        return math.floor(round(self.corrupt_fraction * n, 9))


class _OptionalThreat:
    """Constraint: ``None`` or a :class:`ThreatModel`."""

    def describe(self) -> str:
        return "None or a ThreatModel"

    def convert(self, value: object) -> object:
        return value if value is None or isinstance(value, ThreatModel) else INVALID


@dataclass(frozen=True)
class SecAggParams:
    """The public parameters of a SecAgg+ round.

    Usually built by :func:`derive_parameters`; may be given by hand (tests, small fixed
    deployments), in which case only the structural rules below are checked.

    Parameters
    ----------
    n : int
        Number of clients that start the round, ``>= 2``.
    k : int
        Graph degree: each client's number of neighbours. ``k = n - 1`` is the complete graph
        (SecAgg); below that the graph is a Harary graph and ``k`` must be even, ``>= 2``.
    t : int
        Shamir threshold, in ``[k // 2 + 1, k]`` (a strict majority of a neighbourhood, so a
        server splitting its questions cannot collect both shares of anyone from honest
        clients alone).
    clip : float
        ``c``: inputs are clipped to ``[-c, c]`` per coordinate, ``> 0``.
    fixed_point_bits : int
        ``f``: inputs are scaled by ``2^f`` before rounding, in ``[0, 62]``.
    modulus_bits : int
        ``b``: the masked arithmetic is modulo ``2^b``, 32 or 64. Parameters for which
        ``n * ceil(c * 2^f) >= 2^(b-1)`` are refused (the sum could wrap).
    rounding : {"stochastic", "nearest"}
        Fixed-point rounding (:mod:`velocity.secagg._field`).
    threat, privacy_failure, correctness_failure
        Set by :func:`derive_parameters`: the threat model and the bounds it achieved.

    Examples
    --------
    >>> p = SecAggParams(n=5, k=4, t=3)
    >>> p.complete_graph, p.modulus
    (True, 4294967296)
    >>> SecAggParams(n=10, k=4, t=2)
    Traceback (most recent call last):
        ...
    velocity.errors.ConfigurationError: SecAggParams.t must be an int in [3, 4]; got 2
    """

    n: int
    k: int
    t: int
    clip: float = 1.0
    fixed_point_bits: int = 16
    modulus_bits: int = 32
    rounding: Rounding = "stochastic"
    threat: ThreatModel | None = None
    privacy_failure: float | None = None
    correctness_failure: float | None = None

    _constraints: ClassVar[dict[str, Constraint]] = {
        "n": Integer(2, 2**32 - 2),
        "k": Integer(1),
        "t": Integer(1),
        "clip": Real(0, low_open=True),
        "fixed_point_bits": Integer(0, 62),
        "modulus_bits": _ModulusBits(),
        "rounding": OneOf(*ROUNDINGS),
        "threat": _OptionalThreat(),
        "privacy_failure": NoneOr(Real(0, 1)),
        "correctness_failure": NoneOr(Real(0, 1)),
    }

    def __post_init__(self) -> None:
        check_parameters(self)
        n = self.n
        check_value("SecAggParams", "k", self.k, Integer(1, n - 1))
        if self.k < n - 1 and self.k % 2:
            raise ConfigurationError(
                f"SecAggParams.k must be n - 1 = {n - 1} (complete graph) or an even int in "
                f"[2, {n - 2}] (Harary graph); got {self.k}"
            )
        check_value("SecAggParams", "t", self.t, Integer(self.k // 2 + 1, self.k))
        check_sum_capacity(n, self.clip, self.fixed_point_bits, self.modulus_bits)

    @property
    def complete_graph(self) -> bool:
        """Whether every client neighbours every other one (``k = n - 1``, SecAgg)."""
        return self.k == self.n - 1

    @property
    def modulus(self) -> int:
        """``2^b``, the modulus of the masked vectors."""
        return 1 << self.modulus_bits

    @property
    def prime(self) -> int:
        """The prime of the Shamir field, ``2^130 - 5``."""
        return PRIME

    @property
    def element_bytes(self) -> int:
        """Bytes per masked coordinate on the wire: ``b / 8``."""
        return self.modulus_bits // 8

    @property
    def max_abs_encoded(self) -> int:
        """``ceil(c * 2^f)``: the largest magnitude of one encoded coordinate."""
        return max_abs_encoded(self.clip, self.fixed_point_bits)

    def error_bound(self, m: int) -> float:
        """Per-coordinate bound on the fixed-point error of a sum of ``m`` in-range inputs."""
        return rounding_error_bound(m, self.fixed_point_bits, self.rounding)


# -- exact tails --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _log_factorial_table(size: int) -> NDArray[np.float64]:
    """``log(i!)`` for ``i = 0..size - 1`` (``math.lgamma``, accurate to float64)."""
    table = np.fromiter((math.lgamma(i + 1.0) for i in range(size)), np.float64, count=size)
    table.setflags(write=False)
    return table


def _lf(top: int) -> NDArray[np.float64]:
    """A log-factorial table covering ``0..top`` (sizes rounded up to a power of two)."""
    return _log_factorial_table(1 << max(6, int(top).bit_length()))


def hypergeometric_pmf(population: int, successes: int, draws: int) -> NDArray[np.float64]:
    """``P[X = j]`` for ``j = 0..draws``, X the successes among ``draws`` drawn without
    replacement from ``population`` items of which ``successes`` are successes.

    >>> [round(float(p), 4) for p in hypergeometric_pmf(4, 2, 2)]
    [0.1667, 0.6667, 0.1667]
    """
    out = np.zeros(draws + 1, dtype=np.float64)
    lo = max(0, draws - (population - successes))
    hi = min(draws, successes)
    if lo > hi:
        return out
    lf = _lf(population)
    j = np.arange(lo, hi + 1, dtype=np.int64)
    failures = population - successes
    log = (
        lf[successes]
        - lf[j]
        - lf[successes - j]
        + lf[failures]
        - lf[draws - j]
        - lf[failures - draws + j]
        - (lf[population] - lf[draws] - lf[population - draws])
    )
    out[lo : hi + 1] = np.exp(log)
    return out


def _upper_tails(pmf: NDArray[np.float64]) -> NDArray[np.float64]:
    """``tails[a] = sum(pmf[a:])``, summed from the small end, with ``tails[len] = 0``."""
    tails = np.zeros(pmf.shape[0] + 1, dtype=np.float64)
    tails[:-1] = np.cumsum(pmf[::-1])[::-1]
    return tails


def _binomial_log_pmf(
    trials: NDArray[np.int64], successes: NDArray[np.int64], p: float
) -> NDArray[np.float64]:
    """``log P[Bin(m, p) = j]`` elementwise (``-inf`` where ``j`` is outside ``[0, m]``)."""
    m, j = np.broadcast_arrays(trials, successes)
    valid = (j >= 0) & (j <= m)
    jj = np.where(valid, j, 0)
    mj = np.where(valid, m - j, 0)
    lf = _lf(int(m.max(initial=0)))
    log = lf[np.where(valid, m, 0)] - lf[jj] - lf[mj] + jj * math.log(p) + mj * math.log1p(-p)
    out: NDArray[np.float64] = np.where(valid, log, -np.inf)
    return out


def _binomial_cdf_rows(trials: NDArray[np.int64], p: float, r: int) -> NDArray[np.float64]:
    """``P[Bin(m, p) <= r]`` for every ``m`` in ``trials`` (exact pmfs in log space)."""
    if r < 0:
        return np.zeros(trials.shape[0], dtype=np.float64)
    if p >= 1.0:
        return (trials <= r).astype(np.float64)
    if p <= 0.0:
        return np.ones(trials.shape[0], dtype=np.float64)
    j = np.arange(r + 1, dtype=np.int64)
    probs = np.exp(_binomial_log_pmf(trials[:, None], j[None, :], p))
    cdf: NDArray[np.float64] = np.minimum(probs.sum(axis=1), 1.0)
    return cdf


def neighbourhood_exposure(n: int, k: int, t: int, corrupt: int) -> float:
    """``P[X >= 2t - k]``: one honest client's neighbourhood holds both its secrets.

    ``X ~ Hypergeometric(n - 1, corrupt, k)`` counts its corrupt neighbours.
    """
    need = 2 * t - k
    if need <= 0:
        return 1.0
    pmf = hypergeometric_pmf(n - 1, corrupt, k)
    return float(min(1.0, _upper_tails(pmf)[min(need, k + 1)]))


def run_removed_probability(n: int, run: int, corrupt: int, dropout_rate: float) -> float:
    """``P[run given labels are all corrupt or dropped]`` (corrupt: ``corrupt`` of ``n``
    placed uniformly; each other client dropped with probability ``dropout_rate``)."""
    pmf = hypergeometric_pmf(n, corrupt, run)
    if dropout_rate <= 0.0:
        return float(pmf[run])
    j = np.arange(run + 1)
    return float(min(1.0, np.sum(pmf * np.exp((run - j) * math.log(dropout_rate)))))


_NEGLIGIBLE: Final = 2.0**-200


def neighbourhood_shortfall(n: int, k: int, t: int, corrupt: int, dropout_rate: float) -> float:
    """``P[fewer than t of a client's k neighbours are honest survivors]`` (an upper bound).

    Sums ``P[X = x] * P[Bin(k - x, 1 - dropout_rate) <= t - 1]`` over the values of X with
    ``P[X = x] > 2^-200`` and adds the remaining mass of X whole, so it never under-estimates.
    """
    pmf = hypergeometric_pmf(n - 1, corrupt, k)
    keep = pmf > _NEGLIGIBLE
    rows = np.flatnonzero(keep).astype(np.int64)
    cdf = _binomial_cdf_rows(k - rows, 1.0 - dropout_rate, t - 1)
    total = float(np.sum(pmf[rows] * cdf) + np.sum(pmf[~keep]))
    return min(1.0, total)


def _shortfall_lower_bound(pmf: NDArray[np.float64], k: int, t: int, dropout_rate: float) -> float:
    """A cheap lower bound on :func:`neighbourhood_shortfall`, used only to skip hopeless k.

    Its largest term ``P[X = x] * L(x)`` with ``L(x) <= P[Bin(m, q) <= t - 1]`` (``m = k - x``,
    ``q = 1 - dropout_rate``): ``1/2`` when ``t - 1 >= ceil(m q)`` (a binomial's median is at
    most ``ceil(m q)``), else the single pmf term ``P[Bin(m, q) = t - 1]``.
    """
    if dropout_rate <= 0.0:
        return 0.0
    rows = np.flatnonzero(pmf > _NEGLIGIBLE).astype(np.int64)
    trials = k - rows
    q = 1.0 - dropout_rate
    single = np.exp(_binomial_log_pmf(trials, np.full_like(rows, t - 1), q))
    low = np.where(t - 1 >= np.ceil(trials * q), 0.5, single)
    return float(np.max(pmf[rows] * low, initial=0.0))


def _check_kt(n: int, k: int, t: int) -> None:
    check_value("failure_bound", "n", n, Integer(2))
    check_value("failure_bound", "k", k, Integer(1, n - 1))
    check_value("failure_bound", "t", t, Integer(1, k))


def privacy_failure_bound(n: int, k: int, t: int, threat: ThreatModel) -> float:
    """Upper bound on the probability that the adversary learns more than the sum.

    ``(n - C) * P[X >= 2t - k]`` (an honest neighbourhood gives up both secrets) plus, for a
    sparse Harary graph, ``n * P[k/2 consecutive labels removed]`` (the honest survivors may
    be disconnected). ``C = threat.corrupt_count(n)``.

    >>> t = ThreatModel(corrupt_fraction=0.1, dropout_rate=0.1)
    >>> privacy_failure_bound(1000, 196, 125, t) < 2.0**-40
    True
    """
    _check_kt(n, k, t)
    corrupt = threat.corrupt_count(n)
    exposure = (n - corrupt) * neighbourhood_exposure(n, k, t, corrupt)
    if k < n - 1:
        exposure += n * run_removed_probability(n, k // 2, corrupt, threat.dropout_rate)
    return min(1.0, exposure)


def correctness_failure_bound(n: int, k: int, t: int, threat: ThreatModel) -> float:
    """Upper bound on the probability that some client cannot be unmasked.

    ``n * P[Bin(k - X, 1 - dropout_rate) < t]`` (union over the clients whose self-mask seed
    or masking key must be rebuilt from at least ``t`` neighbours).

    >>> t = ThreatModel(corrupt_fraction=0.1, dropout_rate=0.1)
    >>> correctness_failure_bound(1000, 196, 125, t) < 2.0**-20
    True
    """
    _check_kt(n, k, t)
    corrupt = threat.corrupt_count(n)
    return min(1.0, n * neighbourhood_shortfall(n, k, t, corrupt, threat.dropout_rate))


def _smallest_private_t(n: int, k: int, threat: ThreatModel, corrupt: int) -> int | None:
    budget = 2.0**-threat.security_bits
    if k < n - 1:
        budget -= n * run_removed_probability(n, k // 2, corrupt, threat.dropout_rate)
        if budget <= 0:
            return None
    tails = _upper_tails(hypergeometric_pmf(n - 1, corrupt, k))
    ts = np.arange(k // 2 + 1, k + 1)
    ok = np.flatnonzero((n - corrupt) * tails[2 * ts - k] <= budget)
    return int(ts[ok[0]]) if ok.size else None


def _pick_fixed_point_bits(n: int, clip: float, modulus_bits: int) -> int:
    limit = 1 << (modulus_bits - 1)
    for bits in range(MAX_FIXED_POINT_BITS, -1, -1):
        if n * max_abs_encoded(clip, bits) < limit:
            return bits
    check_sum_capacity(n, clip, 0, modulus_bits)  # raises, naming n, clip and the bits
    raise AssertionError("unreachable")


def derive_parameters(
    n: int,
    threat: ThreatModel,
    *,
    clip: float = 1.0,
    modulus_bits: int = 32,
    fixed_point_bits: int | None = None,
    rounding: Rounding = "stochastic",
) -> SecAggParams:
    """The smallest graph degree k, and the threshold t, that meet ``threat`` for ``n`` clients.

    Scans even degrees ``k = 2, 4, ...`` below ``n - 1`` (and at most
    :data:`MAX_SPARSE_DEGREE`): the first k for which the smallest t meeting the privacy target
    (:func:`privacy_failure_bound` ``<= 2^-security_bits``) also meets the correctness target
    (:func:`correctness_failure_bound` ``<= 2^-correctness_bits``) wins. If none does, the
    complete graph ``k = n - 1`` is tried the same way. The result is monotone: a larger
    ``dropout_rate`` or ``corrupt_fraction`` never gives a smaller k.

    ``fixed_point_bits=None`` picks the largest ``f <= 24`` with ``n * ceil(clip * 2^f) <
    2^(modulus_bits - 1)``.

    Raises
    ------
    ConfigurationError
        If no (k, t) meets the threat model (the message names n and the failing target), or
        the fixed-point parameters cannot hold a sum of n inputs.

    Examples
    --------
    >>> p = derive_parameters(1000, ThreatModel(corrupt_fraction=0.05, dropout_rate=0.05))
    >>> p.complete_graph, p.k < 200, p.k // 2 < p.t <= p.k
    (False, True, True)
    >>> derive_parameters(8, ThreatModel(corrupt_fraction=0.0, dropout_rate=0.0)).k  # a cycle
    2
    >>> derive_parameters(8, ThreatModel(0.0, 0.01, correctness_bits=10)).complete_graph
    True
    """
    check_value("derive_parameters", "n", n, Integer(2, 2**32 - 2))
    if not isinstance(threat, ThreatModel):
        raise ConfigurationError(f"derive_parameters.threat must be a ThreatModel; got {threat!r}")
    bits = (
        _pick_fixed_point_bits(n, clip, modulus_bits)
        if fixed_point_bits is None
        else fixed_point_bits
    )
    corrupt = threat.corrupt_count(n)
    target = 2.0**-threat.correctness_bits
    last_reason = ""
    for k in [*range(2, min(n - 2, MAX_SPARSE_DEGREE) + 1, 2), n - 1]:
        t = _smallest_private_t(n, k, threat, corrupt)
        if t is None:
            last_reason = f"no t <= k={k} keeps the privacy failure below 2^-{threat.security_bits}"
            continue
        pmf = hypergeometric_pmf(n - 1, corrupt, k)
        if n * _shortfall_lower_bound(pmf, k, t, threat.dropout_rate) > target:
            last_reason = f"k={k} needs t >= {t} for privacy, too many for its survivors"
            continue
        failure = correctness_failure_bound(n, k, t, threat)
        if failure > target:
            last_reason = (
                f"k={k} needs t >= {t} for privacy, and then a neighbourhood falls below t "
                f"survivors with probability up to {failure:.3g} > 2^-{threat.correctness_bits}"
            )
            continue
        return SecAggParams(
            n=n,
            k=k,
            t=t,
            clip=clip,
            fixed_point_bits=bits,
            modulus_bits=modulus_bits,
            rounding=rounding,
            threat=threat,
            privacy_failure=privacy_failure_bound(n, k, t, threat),
            correctness_failure=failure,
        )
    raise ConfigurationError(
        f"derive_parameters: no graph degree and threshold meet {threat} for n={n}: even the "
        f"complete graph fails ({last_reason}); use more clients, a smaller corrupt_fraction "
        "or dropout_rate, or fewer security_bits or correctness_bits"
    )
