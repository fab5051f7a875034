"""Differential-privacy accounting of the Gaussian mechanism over federated rounds.

Built on Google's ``dp-accounting`` (RDP: Mironov 2017, with the conversion of Canonne,
Kamath & Steinke 2020; PLD: Koskela et al. 2020, Doroshenko et al. 2022). One round releases
the sum of the sampled clients' clipped updates plus ``N(0, sigma^2)`` noise per coordinate.

The noise multiplier
--------------------
Everywhere in this module ``noise_multiplier = z = sigma / S``, where ``S`` is the L2 bound
on **one client's contribution** to the noised sum (the clip norm; for a weighted sum, the
bound on ``weight * update``). The same ``z`` is meant for every sampling scheme: the
accountant applies the neighbouring relation's sensitivity itself.

* ``"poisson"`` — add/remove-one adjacency (a client is in the federation or not): the sums
  of two neighbouring federations differ by at most ``S``, so the sensitivity is ``S`` and
  the event is ``PoissonSampledDpEvent(q, GaussianDpEvent(z))``.
* ``"fixed"`` and ``"full"`` — replace-one adjacency (the population size is public; one
  client's data is swapped for anything else): the sums differ by up to ``2 S``. The RDP
  accountant of ``dp-accounting`` takes an inner ``GaussianDpEvent``'s multiplier as
  ``sigma / (distance between neighbouring outputs)`` whatever the relation — the RDP of
  ``GaussianDpEvent(w)`` is ``alpha / (2 w^2)``, and ``_compute_rdp_sample_wor_gaussian``
  (Wang, Balle & Kasiviswanathan 2019, Theorem 27) takes the base mechanism's replace-one
  RDP the same way — so the RDP events carry ``w = z / 2``. Its PLD accountant, on the other
  hand, models replace-one as shifting the mean by ``-S`` and ``+S`` (the doubling is
  internal), so a PLD event carries ``z`` itself. :func:`round_event` builds the event the
  chosen accountant expects. For a fixed sample the RDP of a round is, order by order, the
  smaller of the sampled bound and the full-participation Gaussian's (:func:`_round_rdp`).

So a DP-FedAvg server that clips to ``S`` and adds ``N(0, (z S)^2)`` to the sum (or
``N(0, (z S / m)^2)`` to the mean over a fixed ``m``) reports the right epsilon with the same
``z`` under every scheme.

Supported combinations
----------------------
``rdp``: ``poisson``, ``fixed``, ``full``. ``pld``: ``poisson``, ``full`` (``dp-accounting``'s
PLD accountant has no sampling without replacement). With ``pld``, a composition of plain
Gaussian mechanisms (``full``, or ``poisson`` at rate 1) is one Gaussian mechanism with
``z_eff = (sum_i 1 / z_i^2)^(-1/2)`` whose privacy profile is known exactly (Balle & Wang
2018): that exact value is returned, which the discretised PLD only approaches from above.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Final, Literal

import dp_accounting  # type: ignore[import-untyped]
import numpy as np
from dp_accounting.pld import privacy_loss_distribution  # type: ignore[import-untyped]
from dp_accounting.rdp import rdp_privacy_accountant  # type: ignore[import-untyped]
from numpy.typing import NDArray

from velocity._validation import (
    INVALID,
    Constraint,
    Integer,
    NoneOr,
    OneOf,
    Real,
    TupleOf,
    check_parameters,
    check_value,
    short_repr,
)
from velocity.errors import ConfigurationError

__all__ = [
    "ACCOUNTANTS",
    "DEFAULT_RDP_ORDERS",
    "MAX_NOISE_MULTIPLIER",
    "PLD_MIN_NOISE_MULTIPLIER",
    "SAMPLINGS",
    "SUPPORTED_SAMPLINGS",
    "AccountantKind",
    "NeighboringRelationName",
    "PrivacyAccountant",
    "PrivacyBudgetExceededError",
    "Sampling",
    "SamplingScheme",
    "analytic_gaussian_sigma",
    "calibrate_noise_multiplier",
    "classic_gaussian_sigma",
    "compute_epsilon",
    "gaussian_delta",
    "gaussian_epsilon",
    "round_event",
]

Sampling = Literal["poisson", "fixed", "full"]
AccountantKind = Literal["rdp", "pld"]
NeighboringRelationName = Literal["add_or_remove_one", "replace_one"]

SAMPLINGS: Final[tuple[str, ...]] = ("poisson", "fixed", "full")
ACCOUNTANTS: Final[tuple[str, ...]] = ("rdp", "pld")
SUPPORTED_SAMPLINGS: Final[dict[str, tuple[str, ...]]] = {
    "rdp": ("poisson", "fixed", "full"),
    "pld": ("poisson", "full"),
}
"""The sampling schemes each accountant can compose."""

DEFAULT_RDP_ORDERS: Final[tuple[float, ...]] = (
    1.05,
    *(1 + k / 10.0 for k in range(1, 100)),
    *(float(a) for a in range(11, 65)),
    *(72.0, 80.0, 96.0, 112.0, 128.0, 160.0, 192.0, 256.0, 512.0, 1024.0),
)
"""RDP orders: 1.05, 1.1 to 10.9 in steps of 0.1, every integer 11 to 64, then 72, 80, 96, 112,
128, 160, 192, 256, 512, 1024 (164 orders).

A superset of ``dp_accounting``'s own default grid, so the epsilon reported is never larger
than its. Small orders serve large epsilons, large orders small ones (the optimal order grows
roughly like ``1 + sqrt(2 ln(1/delta)) / epsilon``). Above 64 the grid is sparse on purpose:
the RDP of sampling without replacement costs ``O(alpha^2)`` per integer order, and every
integer to 256 would make one ``"fixed"`` round cost seconds instead of ~0.3 s."""

MAX_NOISE_MULTIPLIER: Final = 1e4
""":func:`calibrate_noise_multiplier` searches no higher; a target needing more is refused."""
MIN_CALIBRATED_NOISE_MULTIPLIER: Final = 1e-2
""":func:`calibrate_noise_multiplier` searches no lower (it returns this floor if it suffices)."""
PLD_MIN_NOISE_MULTIPLIER: Final = 0.3
"""The smallest noise multiplier the PLD accountant composes under Poisson sampling at a rate
below 1: the discretised privacy loss needs ``O(1/z^2)`` memory (about 1 GB at ``z = 0.1``)
and epsilon is far past any useful budget there; use ``accountant="rdp"`` below it."""
PLD_DISCRETIZATION: Final = 1e-4
"""``value_discretization_interval`` of the PLDs (``dp_accounting``'s default)."""
_BISECTION_RTOL: Final = 1e-12

_DELTA: Final = Real(0, 1, low_open=True, high_open=True)
_NOISE: Final = Real(0)
_ORDERS: Final = NoneOr(TupleOf(Real(1, low_open=True), min_length=1))
_ACCOUNTANT: Final = OneOf(*ACCOUNTANTS)

_RELATIONS: Final = {
    "add_or_remove_one": dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
    "replace_one": dp_accounting.NeighboringRelation.REPLACE_ONE,
}


class PrivacyBudgetExceededError(ConfigurationError):
    """The next round would take epsilon past the budget.

    A :class:`~velocity.errors.ConfigurationError`: the budget, the noise multiplier and the
    number of rounds asked for are inconsistent. ``round`` (1-based), ``epsilon`` (what the
    round would reach), ``budget`` and ``delta`` are kept as attributes.

    Examples
    --------
    >>> err = PrivacyBudgetExceededError(round=7, epsilon=1.03125, budget=1.0, delta=1e-5)
    >>> str(err)
    'privacy budget exhausted: round 7 would bring epsilon to 1.0312 > budget 1 (delta=1e-05)'
    >>> err.round, err.budget
    (7, 1.0)
    """

    def __init__(self, *, round: int, epsilon: float, budget: float, delta: float) -> None:
        self.round = round
        self.epsilon = epsilon
        self.budget = budget
        self.delta = delta
        super().__init__(
            f"privacy budget exhausted: round {round} would bring epsilon to {epsilon:.4f} > "
            f"budget {budget:g} (delta={delta:g})"
        )


# -- sampling ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplingScheme:
    """How the clients of one round are drawn from a population of ``population``.

    Parameters
    ----------
    kind : {"poisson", "fixed", "full"}
        ``"poisson"``: each client joins independently with probability ``probability``
        (add/remove-one adjacency, amplification by Poisson subsampling). ``"fixed"``: a
        uniformly random subset of exactly ``sample_size`` clients, without replacement
        (replace-one adjacency, Wang, Balle & Kasiviswanathan 2019). ``"full"``: every
        client every round (replace-one, no amplification).
    population : int
        ``N >= 1``, the number of clients that may be sampled (public under replace-one).
    sample_size : int
        ``1 <= m <= N``. The exact sample size for ``"fixed"``, ``N`` for ``"full"``, the
        expected size ``max(1, round(q N))`` for ``"poisson"`` (informative only).
    probability : float or None
        ``"poisson"`` only: the inclusion probability ``q`` in ``(0, 1]``, kept exactly (the
        accounting uses it, not ``sample_size / population``). Defaults to
        ``sample_size / population``; must be ``None`` for the other kinds.

    Notes
    -----
    Prefer the constructors :meth:`poisson`, :meth:`fixed` and :meth:`full`.

    Examples
    --------
    >>> s = SamplingScheme.poisson(60000, 256 / 60000)
    >>> s.rate == 256 / 60000, s.sample_size, s.neighboring_relation
    (True, 256, 'add_or_remove_one')
    >>> SamplingScheme.fixed(100, 10).rate
    0.1
    >>> SamplingScheme.full(5).neighboring_relation
    'replace_one'
    >>> SamplingScheme.fixed(10, 20)
    Traceback (most recent call last):
        ...
    velocity.errors.ConfigurationError: SamplingScheme.sample_size must be an int in [1, 10]; got 20
    """

    kind: Sampling
    population: int
    sample_size: int
    probability: float | None = None

    _constraints: ClassVar[dict[str, Constraint]] = {
        "kind": OneOf(*SAMPLINGS),
        "population": Integer(1),
        "sample_size": Integer(1),
        "probability": NoneOr(Real(0, 1, low_open=True)),
    }

    def __post_init__(self) -> None:
        check_parameters(self)
        n = self.population
        check_value("SamplingScheme", "sample_size", self.sample_size, Integer(1, n))
        if self.kind == "full" and self.sample_size != n:
            raise ConfigurationError(
                f"SamplingScheme.sample_size must equal population={n} for kind='full' "
                f"(every client every round); got {self.sample_size}"
            )
        if self.kind != "poisson":
            if self.probability is not None:
                raise ConfigurationError(
                    "SamplingScheme.probability applies only to kind='poisson'; got "
                    f"probability={self.probability!r} with kind={self.kind!r}"
                )
            return
        if self.probability is None:
            object.__setattr__(self, "probability", self.sample_size / n)
            return
        expected = _expected_size(self.probability, n)
        if self.sample_size != expected:
            raise ConfigurationError(
                f"SamplingScheme.sample_size must be max(1, round(probability * population)) "
                f"= {expected} for kind='poisson' with probability={self.probability!r}, "
                f"population={n}; got {self.sample_size}"
            )

    @classmethod
    def poisson(cls, population: int, rate: float) -> SamplingScheme:
        """Poisson sampling: each of ``population`` clients joins with probability ``rate``."""
        n = check_value("SamplingScheme", "population", population, Integer(1))
        q = check_value("SamplingScheme", "rate", rate, Real(0, 1, low_open=True))
        return cls("poisson", n, _expected_size(q, n), q)

    @classmethod
    def fixed(cls, population: int, sample_size: int) -> SamplingScheme:
        """Exactly ``sample_size`` of ``population`` clients, uniformly without replacement."""
        return cls("fixed", population, sample_size)

    @classmethod
    def full(cls, population: int) -> SamplingScheme:
        """Every one of ``population`` clients takes part in every round."""
        return cls("full", population, population)

    @property
    def rate(self) -> float:
        """``q``: the Poisson probability, or ``sample_size / population``."""
        if self.probability is not None:
            return self.probability
        return self.sample_size / self.population

    @property
    def neighboring_relation(self) -> NeighboringRelationName:
        """``"add_or_remove_one"`` for Poisson sampling, ``"replace_one"`` otherwise."""
        return "add_or_remove_one" if self.kind == "poisson" else "replace_one"


def _expected_size(q: float, n: int) -> int:
    return max(1, min(n, round(q * n)))


class _IsSampling:
    """Constraint: a :class:`SamplingScheme`."""

    def describe(self) -> str:
        return "a SamplingScheme"

    def convert(self, value: object) -> object:
        return value if isinstance(value, SamplingScheme) else INVALID


def _check_setup(
    owner: str, sampling: object, accountant: object, orders: object
) -> tuple[SamplingScheme, AccountantKind, tuple[float, ...] | None]:
    """Validated (sampling, accountant, orders); ``orders`` resolved to the default for RDP."""
    scheme: SamplingScheme = check_value(owner, "sampling", sampling, _IsSampling())
    kind: AccountantKind = check_value(owner, "accountant", accountant, _ACCOUNTANT)
    grid: tuple[float, ...] | None = check_value(owner, "orders", orders, _ORDERS)
    if kind == "pld" and grid is not None:
        raise ConfigurationError(
            f"{owner}.orders applies only to accountant='rdp'; got orders={short_repr(grid)} "
            "with accountant='pld'"
        )
    _check_supported(owner, kind, scheme)
    if kind == "rdp" and grid is None:
        grid = DEFAULT_RDP_ORDERS
    return scheme, kind, grid


def _check_supported(owner: str, accountant: str, sampling: SamplingScheme) -> None:
    if sampling.kind in SUPPORTED_SAMPLINGS[accountant]:
        return
    supported = "; ".join(
        f"{name} with {', '.join(kinds)}" for name, kinds in SUPPORTED_SAMPLINGS.items()
    )
    raise ConfigurationError(
        f"{owner}: accountant={accountant!r} does not support sampling={sampling.kind!r} "
        "(dp-accounting's PLD accountant has no sampling without replacement); supported: "
        f"{supported}"
    )


# -- events --------------------------------------------------------------------------------------


def _event_multiplier(z: float, sampling: SamplingScheme, accountant: str) -> float:
    """The multiplier of the inner ``GaussianDpEvent`` for ``z = sigma / S``."""
    if accountant == "rdp" and sampling.neighboring_relation == "replace_one":
        return z / 2.0  # dp-accounting's RDP takes sigma / (2 S) under replace-one
    return z


def round_event(
    noise_multiplier: float, sampling: SamplingScheme, *, accountant: AccountantKind = "rdp"
) -> dp_accounting.DpEvent:
    """The ``dp_accounting`` event of one round, as ``accountant`` expects it.

    ``noise_multiplier`` is ``sigma / S`` (module docstring): ``PoissonSampledDpEvent(q,
    GaussianDpEvent(z))`` for Poisson sampling; ``SampledWithoutReplacementDpEvent(N, m,
    GaussianDpEvent(z / 2))`` for a fixed sample (RDP only); ``GaussianDpEvent(z / 2)`` (RDP)
    or ``GaussianDpEvent(z)`` (PLD) for full participation. Compose it into an accountant
    built with ``NeighboringRelation`` matching ``sampling.neighboring_relation``.

    Examples
    --------
    >>> round_event(1.0, SamplingScheme.poisson(1000, 0.01))
    PoissonSampledDpEvent(sampling_probability=0.01, event=GaussianDpEvent(noise_multiplier=1.0))
    >>> round_event(1.0, SamplingScheme.fixed(1000, 10)).event
    GaussianDpEvent(noise_multiplier=0.5)
    >>> round_event(1.0, SamplingScheme.full(3), accountant="pld")
    GaussianDpEvent(noise_multiplier=1.0)
    """
    owner = "round_event"
    z = check_value(owner, "noise_multiplier", noise_multiplier, _NOISE)
    sampling, accountant, _ = _check_setup(owner, sampling, accountant, None)
    gaussian = dp_accounting.GaussianDpEvent(_event_multiplier(z, sampling, accountant))
    if sampling.kind == "poisson":
        return dp_accounting.PoissonSampledDpEvent(sampling.rate, gaussian)
    if sampling.kind == "fixed":
        return dp_accounting.SampledWithoutReplacementDpEvent(
            sampling.population, sampling.sample_size, gaussian
        )
    return gaussian


def _dp_relation(sampling: SamplingScheme) -> object:
    return _RELATIONS[sampling.neighboring_relation]


# -- composition ---------------------------------------------------------------------------------

Groups = list[tuple[float, int]]
"""Runs of equal consecutive noise multipliers: ``[(z, count), ...]``."""


def _group(multipliers: Iterable[float]) -> Groups:
    groups: Groups = []
    for z in multipliers:
        if groups and groups[-1][0] == z:
            groups[-1] = (z, groups[-1][1] + 1)
        else:
            groups.append((z, 1))
    return groups


def _parse_multipliers(owner: str, noise_multipliers: object, rounds: object) -> Groups:
    if isinstance(noise_multipliers, numbers.Real) and not isinstance(noise_multipliers, bool):
        z = check_value(owner, "noise_multipliers", noise_multipliers, _NOISE)
        if rounds is None:
            raise ConfigurationError(
                f"{owner}.rounds must be an int >= 0 when noise_multipliers is a single "
                f"float; got None"
            )
        count = check_value(owner, "rounds", rounds, Integer(0))
        return [(z, count)] if count else []
    if isinstance(noise_multipliers, str | bytes) or not isinstance(noise_multipliers, Iterable):
        raise ConfigurationError(
            f"{owner}.noise_multipliers must be a finite float >= 0 or a sequence of them; "
            f"got {short_repr(noise_multipliers)}"
        )
    values = [
        check_value(owner, f"noise_multipliers[{i}]", z, _NOISE)
        for i, z in enumerate(noise_multipliers)
    ]
    if rounds is not None:
        count = check_value(owner, "rounds", rounds, Integer(0))
        if count != len(values):
            raise ConfigurationError(
                f"{owner}.rounds must be None or len(noise_multipliers) = {len(values)} when "
                f"noise_multipliers is a sequence; got {count}"
            )
    return _group(values)


@functools.lru_cache(maxsize=4096)
def _round_rdp(
    z: float, sampling: SamplingScheme, orders: tuple[float, ...]
) -> NDArray[np.float64]:
    """The RDP vector of one round, computed by ``dp_accounting`` (read-only, cached).

    For a fixed sample, the order-wise minimum of the sampled-without-replacement bound and
    of the plain Gaussian's RDP (every client taking part): subsampling never hurts, since
    a subsample of two neighbouring populations, drawn with the same indices, differs in at
    most one client, and Renyi divergence is jointly quasi-convex (van Erven & Harremoës
    2014, Theorem 13). ``dp_accounting``'s Theorem-27 bound plateaus for large ``z`` (at
    rate 0.9 it stays above epsilon 0.3 at delta 1e-7 however large ``z`` is, worse than no
    sampling from ``z`` about 30 on), so the minimum matters there.
    """

    def rdp_of(event: dp_accounting.DpEvent) -> NDArray[np.float64]:
        accountant = rdp_privacy_accountant.RdpAccountant(
            orders=orders, neighboring_relation=_dp_relation(sampling)
        )
        accountant.compose(event)
        return np.asarray(accountant.rdp, dtype=np.float64)

    event = round_event(z, sampling, accountant="rdp")
    rdp = rdp_of(event)
    if sampling.kind == "fixed":
        rdp = np.minimum(rdp, rdp_of(event.event))
    rdp.flags.writeable = False
    return rdp


def _rdp_epsilon(orders: tuple[float, ...], rdp: NDArray[np.float64], delta: float) -> float:
    return float(rdp_privacy_accountant.compute_epsilon(orders, rdp, delta)[0])


def _is_plain_gaussian(sampling: SamplingScheme) -> bool:
    return sampling.kind == "full" or (sampling.kind == "poisson" and sampling.rate == 1.0)


@functools.lru_cache(maxsize=16)
def _round_pld(
    z: float, sampling: SamplingScheme
) -> privacy_loss_distribution.PrivacyLossDistribution:
    """The PLD of one Poisson-sampled round, as ``PLDAccountant`` builds it (cached)."""
    return privacy_loss_distribution.from_gaussian_mechanism(
        standard_deviation=z,
        value_discretization_interval=PLD_DISCRETIZATION,
        sampling_prob=sampling.rate,
        neighboring_relation=_dp_relation(sampling),
    )


def _pld_epsilon(groups: Groups, sampling: SamplingScheme, delta: float) -> float:
    if _is_plain_gaussian(sampling):
        # Gaussians compose to one Gaussian: exact, no discretisation.
        z_eff = math.fsum(count / z**2 for z, count in groups) ** -0.5
        sensitivity = 2.0 if sampling.neighboring_relation == "replace_one" else 1.0
        return _gaussian_epsilon(z_eff, delta, sensitivity)
    low = min(z for z, _ in groups)
    if low < PLD_MIN_NOISE_MULTIPLIER:
        raise ConfigurationError(
            f"accountant='pld' composes noise multipliers >= {PLD_MIN_NOISE_MULTIPLIER} under "
            f"Poisson sampling at rate < 1 (below, its discretised privacy loss needs "
            f"gigabytes and epsilon is far past any budget); got noise_multiplier={low:g}; "
            "use accountant='rdp'"
        )
    pld = privacy_loss_distribution.identity(value_discretization_interval=PLD_DISCRETIZATION)
    for z, count in groups:
        pld = pld.compose(_round_pld(z, sampling).self_compose(count))
    return float(pld.get_epsilon_for_delta(delta))


def _epsilon(
    groups: Groups,
    sampling: SamplingScheme,
    delta: float,
    accountant: str,
    orders: tuple[float, ...] | None,
) -> float:
    if not groups:
        return 0.0
    if any(z == 0.0 for z, _ in groups):
        return math.inf
    if accountant == "pld":
        return _pld_epsilon(groups, sampling, delta)
    assert orders is not None  # resolved by _check_setup
    total = np.zeros(len(orders), dtype=np.float64)
    for z, count in groups:
        total += count * _round_rdp(z, sampling, orders)
    return _rdp_epsilon(orders, total, delta)


def compute_epsilon(
    noise_multipliers: float | Sequence[float],
    sampling: SamplingScheme,
    delta: float,
    *,
    rounds: int | None = None,
    accountant: AccountantKind = "rdp",
    orders: Sequence[float] | None = None,
) -> float:
    """Epsilon at ``delta`` after the rounds, each a Gaussian mechanism under ``sampling``.

    Parameters
    ----------
    noise_multipliers : float or sequence of float
        ``z = sigma / S`` (module docstring). One float with ``rounds=R``: R identical rounds
        (one ``SelfComposedDpEvent``). A sequence: one round per entry (equal consecutive
        values are self-composed together); ``rounds`` is then ``None`` or its length.
    sampling : SamplingScheme
        How each round's clients are drawn.
    delta : float
        In ``(0, 1)``.
    accountant : {"rdp", "pld"}
        Renyi DP (``orders``, default :data:`DEFAULT_RDP_ORDERS`) or privacy loss
        distributions (``orders`` must be ``None``); see :data:`SUPPORTED_SAMPLINGS`.

    Returns
    -------
    float
        ``0.0`` for no rounds, ``math.inf`` if any round has ``z = 0``.

    Examples
    --------
    TF-Privacy's ``compute_dp_sgd_privacy`` test case (60000 examples, batches of 150,
    ``z = 1.3``, 15 epochs, ``delta = 1e-5``):

    >>> sampling = SamplingScheme.poisson(60000, 150 / 60000)
    >>> round(compute_epsilon(1.3, sampling, 1e-5, rounds=6000), 6)
    0.724223
    >>> compute_epsilon([1.0, 0.0], sampling, 1e-5)
    inf
    >>> compute_epsilon(1.0, SamplingScheme.fixed(100, 10), 1e-5, rounds=5, accountant="pld")
    Traceback (most recent call last):
        ...
    velocity.errors.ConfigurationError: compute_epsilon: accountant='pld' does not support \
sampling='fixed' (dp-accounting's PLD accountant has no sampling without replacement); \
supported: rdp with poisson, fixed, full; pld with poisson, full
    """
    owner = "compute_epsilon"
    scheme, kind, grid = _check_setup(owner, sampling, accountant, orders)
    d: float = check_value(owner, "delta", delta, _DELTA)
    groups = _parse_multipliers(owner, noise_multipliers, rounds)
    return _epsilon(groups, scheme, d, kind, grid)


# -- the running accountant ----------------------------------------------------------------------


class PrivacyAccountant:
    """Epsilon of a federation as its rounds happen, with an optional budget.

    Records the noise multiplier of every round actually run (``z = sigma / S``, module
    docstring). With RDP the accumulated RDP vector is kept, so each round costs one cached
    vector addition; with PLD the grouped composition is recomputed once per round (about
    0.1 s for a constant multiplier once its one-round PLD is built).

    Parameters
    ----------
    sampling : SamplingScheme
        How each round's clients are drawn.
    delta : float
        In ``(0, 1)``.
    noise_multiplier : float
        The configured ``z > 0``, used by :meth:`step` and :meth:`check_next` by default.
    accountant : {"rdp", "pld"}
        See :func:`compute_epsilon`.
    orders : sequence of float or None
        RDP orders (default :data:`DEFAULT_RDP_ORDERS`); ``None`` for PLD.
    epsilon_budget : float or None
        If set, :meth:`check_next` and :meth:`step` refuse a round that would exceed it.

    Examples
    --------
    >>> acc = PrivacyAccountant(
    ...     sampling=SamplingScheme.poisson(1000, 0.05), delta=1e-5, noise_multiplier=2.0,
    ...     epsilon_budget=0.5,
    ... )
    >>> round(acc.step(), 4), acc.rounds
    (0.3445, 1)
    >>> round(acc.epsilon_after(1.0), 4)
    1.6094
    >>> while True:
    ...     try:
    ...         _ = acc.step()
    ...     except PrivacyBudgetExceededError as err:
    ...         print(err)
    ...         break
    privacy budget exhausted: round 12 would bring epsilon to 0.5043 > budget 0.5 (delta=1e-05)
    >>> acc.rounds, acc.state() == [2.0] * 11
    (11, True)
    """

    _constraints: ClassVar[dict[str, Constraint]] = {
        "delta": _DELTA,
        "noise_multiplier": Real(0, low_open=True),
        "epsilon_budget": NoneOr(Real(0, low_open=True)),
    }

    def __init__(
        self,
        *,
        sampling: SamplingScheme,
        delta: float,
        noise_multiplier: float,
        accountant: AccountantKind = "rdp",
        orders: Sequence[float] | None = None,
        epsilon_budget: float | None = None,
    ) -> None:
        owner = "PrivacyAccountant"
        self._sampling, self._kind, self._orders = _check_setup(owner, sampling, accountant, orders)
        table = self._constraints
        self._delta: float = check_value(owner, "delta", delta, table["delta"])
        self._noise_multiplier: float = check_value(
            owner, "noise_multiplier", noise_multiplier, table["noise_multiplier"]
        )
        self._budget: float | None = check_value(
            owner, "epsilon_budget", epsilon_budget, table["epsilon_budget"]
        )
        self._recorded: list[float] = []
        self._rdp: NDArray[np.float64] | None = None
        self._epsilon = 0.0
        self._next: tuple[float, float] | None = None  # (z, epsilon after it) for the next round
        self.restore([])

    @property
    def sampling(self) -> SamplingScheme:
        """How each round's clients are drawn."""
        return self._sampling

    @property
    def delta(self) -> float:
        """The delta epsilon is reported at."""
        return self._delta

    @property
    def noise_multiplier(self) -> float:
        """The configured noise multiplier ``z = sigma / S``."""
        return self._noise_multiplier

    @property
    def accountant(self) -> AccountantKind:
        """``"rdp"`` or ``"pld"``."""
        return self._kind

    @property
    def orders(self) -> tuple[float, ...] | None:
        """The RDP orders, or ``None`` for PLD."""
        return self._orders

    @property
    def epsilon_budget(self) -> float | None:
        """The budget, or ``None``."""
        return self._budget

    @property
    def rounds(self) -> int:
        """How many rounds have been recorded."""
        return len(self._recorded)

    @property
    def epsilon(self) -> float:
        """Epsilon at :attr:`delta` after the recorded rounds (cached)."""
        return self._epsilon

    def _resolve(self, noise_multiplier: float | None, name: str) -> float:
        if noise_multiplier is None:
            return self._noise_multiplier
        z: float = check_value("PrivacyAccountant", name, noise_multiplier, _NOISE)
        return z

    def epsilon_after(self, next_noise_multiplier: float | None = None) -> float:
        """Epsilon one more round would reach (default: the configured multiplier); not recorded."""
        z = self._resolve(next_noise_multiplier, "next_noise_multiplier")
        if self._next is not None and self._next[0] == z:
            return self._next[1]
        if z == 0.0:
            epsilon = math.inf
        elif self._rdp is not None:
            assert self._orders is not None
            rdp = self._rdp + _round_rdp(z, self._sampling, self._orders)
            epsilon = _rdp_epsilon(self._orders, rdp, self._delta)
        else:
            groups = _group([*self._recorded, z])
            epsilon = _epsilon(groups, self._sampling, self._delta, self._kind, None)
        self._next = (z, epsilon)
        return epsilon

    def check_next(self, next_noise_multiplier: float | None = None) -> None:
        """Raise :class:`PrivacyBudgetExceededError` if one more round would exceed the budget."""
        epsilon = self.epsilon_after(next_noise_multiplier)
        if self._budget is not None and epsilon > self._budget:
            raise PrivacyBudgetExceededError(
                round=self.rounds + 1, epsilon=epsilon, budget=self._budget, delta=self._delta
            )

    def step(self, noise_multiplier: float | None = None) -> float:
        """Check the budget, record one round, and return the new epsilon."""
        z = self._resolve(noise_multiplier, "noise_multiplier")
        self.check_next(z)
        epsilon = self.epsilon_after(z)
        if self._rdp is not None:
            assert self._orders is not None
            self._rdp = self._rdp + _round_rdp(z, self._sampling, self._orders)
        self._recorded.append(z)
        self._epsilon = epsilon
        self._next = None
        return epsilon

    def state(self) -> list[float]:
        """The recorded per-round noise multipliers (for a checkpoint)."""
        return list(self._recorded)

    def restore(self, noise_multipliers: Sequence[float]) -> None:
        """Replace the record by ``noise_multipliers`` (from :meth:`state`); no budget check."""
        owner = "PrivacyAccountant"
        if isinstance(noise_multipliers, str | bytes) or not isinstance(
            noise_multipliers, Iterable
        ):
            raise ConfigurationError(
                f"{owner}.restore expects a sequence of noise multipliers; got "
                f"{short_repr(noise_multipliers)}"
            )
        values = [
            check_value(owner, f"noise_multipliers[{i}]", z, _NOISE)
            for i, z in enumerate(noise_multipliers)
        ]
        groups = _group(values)
        if self._kind == "rdp":
            assert self._orders is not None
            rdp = np.zeros(len(self._orders), dtype=np.float64)
            for z, count in groups:
                rdp += count * _round_rdp(z, self._sampling, self._orders)
            self._rdp = rdp
        self._epsilon = _epsilon(groups, self._sampling, self._delta, self._kind, self._orders)
        self._recorded = values
        self._next = None

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready summary: the settings, the rounds and epsilon so far."""
        return {
            "epsilon": self._epsilon,
            "delta": self._delta,
            "noise_multiplier": self._noise_multiplier,
            "sampling": self._sampling.kind,
            "sampling_rate": self._sampling.rate,
            "rounds": self.rounds,
            "accountant": self._kind,
            "neighboring_relation": self._sampling.neighboring_relation,
            "orders": None if self._orders is None else list(self._orders),
            "epsilon_budget": self._budget,
        }

    def __repr__(self) -> str:
        return (
            f"PrivacyAccountant(sampling={self._sampling!r}, delta={self._delta!r}, "
            f"noise_multiplier={self._noise_multiplier!r}, accountant={self._kind!r}, "
            f"epsilon_budget={self._budget!r}, rounds={self.rounds}, epsilon={self._epsilon!r})"
        )


# -- calibration ---------------------------------------------------------------------------------


def calibrate_noise_multiplier(
    epsilon: float,
    delta: float,
    *,
    rounds: int,
    sampling: SamplingScheme,
    accountant: AccountantKind = "rdp",
    orders: Sequence[float] | None = None,
    tolerance: float = 1e-3,
) -> float:
    """The smallest noise multiplier whose epsilon after ``rounds`` rounds is at most ``epsilon``.

    A bracket ``[lo, hi]`` with ``eps(lo) > epsilon >= eps(hi)`` is found, then narrowed
    (log-log interpolation, each guess probed on both sides, bisection when that does not
    halve it) until ``hi / lo <= 1 + tolerance``; ``hi`` is returned after
    :func:`compute_epsilon` confirms it, so the answer **never overshoots** the budget and is
    within ``tolerance`` (relative) of the optimum. (``dp_accounting.calibrate_dp_mechanism``
    also ends on the safe side, but with an absolute tolerance and a linear bracket search.)
    The search is over ``[1e-2, 1e4]`` (PLD under Poisson sampling: from
    :data:`PLD_MIN_NOISE_MULTIPLIER`, starting from the RDP answer); if the floor already
    meets the target the floor is returned.

    Raises
    ------
    ConfigurationError
        For a bad argument, or a target that even ``z = 1e4`` cannot meet.

    Examples
    --------
    >>> sampling = SamplingScheme.poisson(1000, 0.05)
    >>> z = calibrate_noise_multiplier(2.0, 1e-5, rounds=100, sampling=sampling)
    >>> round(z, 2), compute_epsilon(z, sampling, 1e-5, rounds=100) <= 2.0
    (1.44, True)
    >>> compute_epsilon(z * 0.99, sampling, 1e-5, rounds=100) > 2.0
    True
    """
    owner = "calibrate_noise_multiplier"
    target = check_value(owner, "epsilon", epsilon, Real(0, low_open=True))
    d: float = check_value(owner, "delta", delta, _DELTA)
    count = check_value(owner, "rounds", rounds, Integer(1))
    scheme, kind, grid = _check_setup(owner, sampling, accountant, orders)
    tol = check_value(owner, "tolerance", tolerance, Real(1e-9, 0.5))

    def eps_of(z: float) -> float:
        return _epsilon([(z, count)], scheme, d, kind, grid)

    floor, guess, factor = MIN_CALIBRATED_NOISE_MULTIPLIER, 1.0, 4.0
    if kind == "pld" and not _is_plain_gaussian(scheme):
        floor, factor = PLD_MIN_NOISE_MULTIPLIER, 1.25
        rdp_z = calibrate_noise_multiplier(
            target, d, rounds=count, sampling=scheme, accountant="rdp", tolerance=1e-2
        )
        guess = max(rdp_z, floor)
    bracket = _bracket(eps_of, target, guess, factor, floor)
    if bracket is None:
        return floor
    lo, e_lo, hi, e_hi = bracket
    if not math.isfinite(e_hi):  # the top of the range still fails
        hint = ""
        if grid is not None:
            top = max(grid)
            hint = (
                f" (with RDP orders up to {top:g}, epsilon stays above about log(1/delta) / "
                f"({top:g} - 1) = {math.log(1 / d) / (top - 1):.3g} until the noise is huge; "
                "larger orders help)"
            )
        raise ConfigurationError(
            f"{owner}: epsilon={target:g} at delta={d:g} is out of reach for {count} rounds "
            f"of {scheme.kind} sampling at rate {scheme.rate:g}: even noise_multiplier="
            f"{MAX_NOISE_MULTIPLIER:g} gives epsilon={e_lo:.4g}{hint}; raise epsilon or "
            "delta, or run fewer rounds"
        )
    hi = _narrow(eps_of, target, lo, e_lo, hi, e_hi, tol)
    if compute_epsilon(hi, scheme, d, rounds=count, accountant=kind, orders=grid) > target:
        raise ConfigurationError(  # pragma: no cover - eps_of is compute_epsilon itself
            f"{owner}: internal error: noise_multiplier={hi!r} does not meet epsilon={target:g}"
        )
    return hi


Bracket = tuple[float, float, float, float]
"""``(lo, eps(lo), hi, eps(hi))`` with ``eps(lo) > target >= eps(hi)``."""


def _bracket(
    f: Callable[[float], float],
    target: float,
    guess: float,
    factor: float,
    floor: float,
) -> Bracket | None:
    """A bracket around the root, ``None`` if ``floor`` meets the target, or
    ``(MAX, eps(MAX), inf, inf)`` if even the top of the range fails."""
    z = min(max(guess, floor), MAX_NOISE_MULTIPLIER)
    e = f(z)
    if e <= target:
        hi, e_hi = z, e
        while hi > floor:
            z = max(hi / factor, floor)
            e = f(z)
            if e > target:
                return z, e, hi, e_hi
            hi, e_hi = z, e
        return None
    lo, e_lo = z, e
    while lo < MAX_NOISE_MULTIPLIER:
        z = min(lo * factor, MAX_NOISE_MULTIPLIER)
        e = f(z)
        if e <= target:
            return lo, e_lo, z, e
        lo, e_lo = z, e
    return lo, e_lo, math.inf, math.inf


def _narrow(
    f: Callable[[float], float],
    target: float,
    lo: float,
    e_lo: float,
    hi: float,
    e_hi: float,
    tol: float,
) -> float:
    """Shrink ``[lo, hi]`` until ``hi / lo <= 1 + tol``; return ``hi`` (it meets the target).

    The Illinois variant of false position on ``g(log z) = log(eps / target)``; once the
    steps fall below the tolerance, the point just across the last guess is probed, which
    closes the bracket. Only true evaluations move the ends, so ``eps(hi) <= target``.
    """
    width = math.log1p(tol)

    def gap(e: float) -> float:
        return math.log(e / target) if e > 0.0 else -math.inf

    g_lo, g_hi = gap(e_lo), gap(e_hi)
    side = 0  # which end the last evaluation replaced: -1 lo, +1 hi
    previous: float | None = None

    def probe(u: float) -> None:
        nonlocal lo, e_lo, g_lo, hi, e_hi, g_hi, side
        z = math.exp(u)
        if not lo < z < hi:
            return
        e = f(z)
        if e > target:
            lo, e_lo, g_lo = z, e, gap(e)
            if side == -1:
                g_hi /= 2.0  # Illinois: hi kept twice, halve its weight
            side = -1
        else:
            hi, e_hi, g_hi = z, e, gap(e)
            if side == 1:
                g_lo /= 2.0
            side = 1

    while math.log(hi / lo) > width:
        u_lo, u_hi = math.log(lo), math.log(hi)
        if math.isfinite(g_lo) and math.isfinite(g_hi) and g_lo > g_hi:
            u = u_lo + (u_hi - u_lo) * g_lo / (g_lo - g_hi)
        else:
            u = 0.5 * (u_lo + u_hi)
        step = math.inf if previous is None else abs(u - previous)
        previous = u
        probe(u)
        if step < width and math.log(hi / lo) > width:
            probe(u + (0.5 if side == -1 else -0.5) * width)
    return hi


# -- the Gaussian mechanism ----------------------------------------------------------------------

_SQRT2: Final = math.sqrt(2.0)
_LOG_SQRT_PI: Final = 0.5 * math.log(math.pi)


def _log_ndtr(x: float) -> float:
    """``log Phi(x)`` for the standard normal CDF, accurate in both tails."""
    if x >= 0.0:
        return math.log1p(-0.5 * math.erfc(x / _SQRT2))
    t = -x / _SQRT2
    if t < 25.0:
        return math.log(0.5 * math.erfc(t))
    # erfc(t) = exp(-t^2) / (t sqrt(pi)) * (1 - 1/(2t^2) + 3/(2t^2)^2 - 15/(2t^2)^3 + ...)
    s = 1.0 / (2.0 * t * t)
    series = 1.0 - s * (1.0 - 3.0 * s * (1.0 - 5.0 * s * (1.0 - 7.0 * s)))
    return -t * t - math.log(t) - _LOG_SQRT_PI + math.log(series) - math.log(2.0)


def _gaussian_delta(sigma: float, epsilon: float, sensitivity: float) -> float:
    a = sensitivity / (2.0 * sigma)
    b = epsilon * sigma / sensitivity
    log_first = _log_ndtr(a - b)
    log_second = epsilon + _log_ndtr(-a - b)
    if log_second >= log_first:
        return 0.0
    return math.exp(log_first) * -math.expm1(log_second - log_first)


def gaussian_delta(sigma: float, epsilon: float, sensitivity: float = 1.0) -> float:
    """The exact delta of the Gaussian mechanism at ``epsilon`` (Balle & Wang 2018, Theorem 8).

    For ``N(0, sigma^2)`` noise on a query of L2 sensitivity ``Δ``::

        delta(eps) = Phi(Δ/(2σ) - eps σ/Δ) - e^eps Phi(-Δ/(2σ) - eps σ/Δ)

    computed as ``Phi(u) (1 - exp(eps + log Phi(v) - log Phi(u)))`` with a log-CDF accurate
    in both tails, so ``e^eps`` is never formed (no overflow for any finite epsilon).

    Examples
    --------
    >>> round(gaussian_delta(1.0, 1.0), 6)
    0.126937
    >>> gaussian_delta(1.0, 800.0) == 0.0
    True
    >>> f"{gaussian_delta(0.05, 700.0):.6e}"  # e^700 would overflow a naive formula
    '1.356662e-138'
    """
    owner = "gaussian_delta"
    s: float = check_value(owner, "sigma", sigma, Real(0, low_open=True))
    e: float = check_value(owner, "epsilon", epsilon, Real(0))
    sens: float = check_value(owner, "sensitivity", sensitivity, Real(0, low_open=True))
    return _gaussian_delta(s, e, sens)


def _gaussian_epsilon(sigma: float, delta: float, sensitivity: float) -> float:
    if _gaussian_delta(sigma, 0.0, sensitivity) <= delta:
        return 0.0
    lo, hi = 0.0, 1.0
    while _gaussian_delta(sigma, hi, sensitivity) > delta:
        lo, hi = hi, 2.0 * hi
    while hi - lo > _BISECTION_RTOL * hi:
        mid = 0.5 * (lo + hi)
        if _gaussian_delta(sigma, mid, sensitivity) > delta:
            lo = mid
        else:
            hi = mid
    return hi


def gaussian_epsilon(sigma: float, delta: float, sensitivity: float = 1.0) -> float:
    """The exact epsilon of the Gaussian mechanism at ``delta``: the smallest ``eps >= 0`` with
    :func:`gaussian_delta` ``<= delta`` (bisection to 1e-12 relative, upper end returned).

    Examples
    --------
    >>> eps = gaussian_epsilon(1.0, 1e-5)
    >>> round(eps, 6), gaussian_delta(1.0, eps) <= 1e-5
    (4.377178, True)
    """
    owner = "gaussian_epsilon"
    s: float = check_value(owner, "sigma", sigma, Real(0, low_open=True))
    d: float = check_value(owner, "delta", delta, _DELTA)
    sens: float = check_value(owner, "sensitivity", sensitivity, Real(0, low_open=True))
    return _gaussian_epsilon(s, d, sens)


def analytic_gaussian_sigma(epsilon: float, delta: float, sensitivity: float = 1.0) -> float:
    """The smallest noise std giving ``(epsilon, delta)``-DP: the analytic Gaussian mechanism.

    Bisection in ``log sigma`` on the decreasing :func:`gaussian_delta` (Balle & Wang 2018,
    Theorem 8), to 1e-12 relative, returning the upper end: never below the optimum, never
    violating ``delta``. Valid for every ``epsilon > 0``, unlike
    :func:`classic_gaussian_sigma`.

    Examples
    --------
    >>> sigma = analytic_gaussian_sigma(1.0, 1e-5)
    >>> round(sigma, 4), gaussian_delta(sigma, 1.0) <= 1e-5
    (3.7306, True)
    >>> round(analytic_gaussian_sigma(10.0, 1e-5, sensitivity=2.0), 4)
    0.9998
    """
    owner = "analytic_gaussian_sigma"
    e: float = check_value(owner, "epsilon", epsilon, Real(0, low_open=True))
    d: float = check_value(owner, "delta", delta, _DELTA)
    sens: float = check_value(owner, "sensitivity", sensitivity, Real(0, low_open=True))
    hi = sens * math.sqrt(2.0 * math.log(1.25 / d)) / e
    while _gaussian_delta(hi, e, sens) > d:
        hi *= 2.0
    lo = hi / 2.0
    while _gaussian_delta(lo, e, sens) <= d:
        lo, hi = lo / 2.0, lo
    while hi / lo - 1.0 > _BISECTION_RTOL:
        mid = math.sqrt(lo * hi)
        if _gaussian_delta(mid, e, sens) > d:
            lo = mid
        else:
            hi = mid
    return hi


def classic_gaussian_sigma(epsilon: float, delta: float, sensitivity: float = 1.0) -> float:
    """``sqrt(2 ln(1.25/delta)) Δ / epsilon`` (Dwork & Roth 2014, Theorem A.1), for ``epsilon < 1``.

    The theorem holds only for ``epsilon < 1`` — beyond it the formula can violate ``delta``
    — so larger epsilons are refused; :func:`analytic_gaussian_sigma` is exact for all.

    Examples
    --------
    >>> round(classic_gaussian_sigma(0.5, 1e-5), 4)
    9.6896
    >>> classic_gaussian_sigma(2.0, 1e-5)
    Traceback (most recent call last):
        ...
    velocity.errors.ConfigurationError: classic_gaussian_sigma.epsilon must be in (0, 1) (the \
classic bound holds only for epsilon < 1); got 2.0; use analytic_gaussian_sigma, exact for \
every epsilon
    """
    owner = "classic_gaussian_sigma"
    e: float = check_value(owner, "epsilon", epsilon, Real(0, low_open=True))
    if e >= 1.0:
        raise ConfigurationError(
            f"{owner}.epsilon must be in (0, 1) (the classic bound holds only for epsilon < 1); "
            f"got {epsilon!r}; use analytic_gaussian_sigma, exact for every epsilon"
        )
    d: float = check_value(owner, "delta", delta, _DELTA)
    sens: float = check_value(owner, "sensitivity", sensitivity, Real(0, low_open=True))
    return sens * math.sqrt(2.0 * math.log(1.25 / d)) / e
