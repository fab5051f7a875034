"""Who takes part in a round: client sampling, dropout and stragglers.

Every decision draws from a generator derived from ``(seed, round, client, purpose)``
(:mod:`velocity._random`), so a client's fate in a round does not depend on which other clients
were selected or in which order they are processed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from velocity._random import numpy_rng
from velocity.errors import ConfigurationError

if TYPE_CHECKING:
    from velocity.sim.population import Population

__all__ = [
    "MAX_CLIENTS",
    "MAX_CLIENTS_PER_ROUND",
    "ClientSpeeds",
    "DelayModel",
    "DropoutModel",
    "FractionSampler",
    "PoissonSampler",
    "StragglerModel",
    "UniformDelay",
    "clients_per_round",
    "select_clients",
]

MAX_CLIENTS = 10**9
"""Largest registered population (lazy populations make it cost nothing until sampled)."""

MAX_CLIENTS_PER_ROUND = 10**6
"""Most clients one round may select (each gets a task and a row of the round's stack)."""


def clients_per_round(num_clients: int, fraction: float, min_clients: int) -> int:
    """``min(N, max(min_clients, 1, ⌊fraction · N⌋))``: how many clients a round selects."""
    return min(num_clients, max(min_clients, 1, math.floor(fraction * num_clients + 1e-9)))


def select_clients(
    num_clients: int, fraction: float, min_clients: int, *, seed: int, round_: int
) -> np.ndarray:
    """Indices (sorted) of the clients selected in ``round_``, drawn without replacement.

    ``max(min_clients, ⌊fraction · num_clients⌋)`` clients, capped at ``num_clients`` — the
    rule of McMahan et al. 2017 (``m = max(C·K, 1)``) with Flower's ``min_fit_clients``.
    """
    if not 0.0 < fraction <= 1.0:
        raise ConfigurationError(f"client_fraction must be in (0, 1]; got {fraction}")
    k = clients_per_round(num_clients, fraction, min_clients)
    if k == num_clients:
        return np.arange(num_clients)
    rng = numpy_rng(seed, round_, "select")
    return np.sort(rng.choice(num_clients, size=k, replace=False))


@dataclass(frozen=True)
class DropoutModel:
    """Each selected client independently fails to return an update with probability ``rate``."""

    rate: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate < 1.0:
            raise ConfigurationError(f"dropout_rate must be in [0, 1); got {self.rate}")

    def dropped(self, client: int, *, seed: int, round_: int) -> bool:
        if self.rate == 0.0:
            return False
        return bool(numpy_rng(seed, round_, client, "dropout").random() < self.rate)


@dataclass(frozen=True)
class StragglerModel:
    """Per-round client delays and a round deadline: late clients are stragglers.

    A client's delay (seconds of simulated time) is drawn from ``distribution`` with mean
    ``mean_s``: ``"lognormal"`` (shape ``sigma``), ``"exponential"`` or ``"uniform"`` on
    ``[0, 2·mean_s]``. Clients whose delay exceeds ``deadline_s`` miss the round.
    """

    deadline_s: float
    distribution: Literal["lognormal", "exponential", "uniform"] = "lognormal"
    mean_s: float = 1.0
    sigma: float = 0.5

    def __post_init__(self) -> None:
        if not self.deadline_s > 0:
            raise ConfigurationError(f"straggler deadline_s must be > 0; got {self.deadline_s}")
        if not self.mean_s > 0:
            raise ConfigurationError(f"straggler delay_mean_s must be > 0; got {self.mean_s}")
        if self.sigma < 0:
            raise ConfigurationError(f"straggler delay_sigma must be >= 0; got {self.sigma}")
        if self.distribution not in ("lognormal", "exponential", "uniform"):
            raise ConfigurationError(
                "straggler delay_distribution must be one of 'lognormal', 'exponential', "
                f"'uniform'; got {self.distribution!r}"
            )

    def delay(self, client: int, *, seed: int, round_: int) -> float:
        rng = numpy_rng(seed, round_, client, "delay")
        if self.distribution == "lognormal":
            mu = math.log(self.mean_s) - self.sigma**2 / 2.0
            return float(rng.lognormal(mu, self.sigma))
        if self.distribution == "exponential":
            return float(rng.exponential(self.mean_s))
        return float(rng.uniform(0.0, 2.0 * self.mean_s))

    def late(self, client: int, *, seed: int, round_: int) -> bool:
        return self.delay(client, seed=seed, round_=round_) > self.deadline_s


class DelayModel(Protocol):
    """How long a simulated client takes to answer a task (virtual seconds): its compute
    and delivery time. ``delay(client, seed=, round_=)`` must be a pure function of its
    arguments (a client's delay never depends on which other clients run)."""

    def delay(self, client: int, *, seed: int, round_: int) -> float: ...


def _check_finite(owner: str, name: str, value: float, *, low: float, open_low: bool) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (open_low and value == low):
        bound = f"> {low:g}" if open_low else f">= {low:g}"
        raise ConfigurationError(f"{owner}.{name} must be a finite number {bound}; got {value!r}")
    return float(value)


@dataclass(frozen=True)
class UniformDelay:
    """Every task's delay uniform on ``[min_s, max_s]``, drawn from
    ``(seed, round, client, "delay")`` (FLP's ``async_fl: {delay_min, delay_max}``).

    >>> UniformDelay(1.0, 3.0).delay(7, seed=0, round_=2) == UniformDelay(1.0, 3.0).delay(
    ...     7, seed=0, round_=2)
    True
    >>> UniformDelay(2.0, 1.0)
    Traceback (most recent call last):
        ...
    velocity.errors.ConfigurationError: UniformDelay.max_s must be >= min_s=2.0; got 1.0
    """

    min_s: float = 0.0
    max_s: float = 3.0

    def __post_init__(self) -> None:
        _check_finite("UniformDelay", "min_s", self.min_s, low=0.0, open_low=False)
        _check_finite("UniformDelay", "max_s", self.max_s, low=0.0, open_low=False)
        if self.max_s < self.min_s:
            raise ConfigurationError(
                f"UniformDelay.max_s must be >= min_s={self.min_s}; got {self.max_s}"
            )

    def delay(self, client: int, *, seed: int, round_: int) -> float:
        if self.max_s == self.min_s:
            return float(self.min_s)
        return float(numpy_rng(seed, round_, client, "delay").uniform(self.min_s, self.max_s))


@dataclass(frozen=True)
class ClientSpeeds:
    """Heavy-tailed client speeds: persistent slow clients, not just unlucky rounds.

    Client ``c`` has a mean task time ``t_c = mean_s · X_c`` with ``X_c`` Pareto-distributed
    with tail index ``shape`` and mean 1 (``X = x_m · U^(-1/shape)``, ``x_m = (shape-1)/shape``),
    drawn once from ``(seed, c, "speed")``; each task then takes ``t_c · J + min_s`` with a
    lognormal jitter ``J`` of mean 1 and log-sd ``jitter`` from ``(seed, round, c, "delay")``.
    With ``shape = 1.5`` about 1 client in 30 is 5x slower than the mean and 1 in 100 is 10x
    slower — the stragglers FedBuff (Nguyen et al. 2022) is built for.

    >>> speeds = ClientSpeeds(mean_s=1.0, shape=1.5, jitter=0.0)
    >>> round(speeds.client_mean(3, seed=0), 4) == round(speeds.delay(3, seed=0, round_=9), 4)
    True
    >>> ClientSpeeds(shape=1.0)
    Traceback (most recent call last):
        ...
    velocity.errors.ConfigurationError: ClientSpeeds.shape must be a finite number > 1; got 1.0
    """

    mean_s: float = 1.0
    shape: float = 1.5
    jitter: float = 0.25
    min_s: float = 0.0

    def __post_init__(self) -> None:
        _check_finite("ClientSpeeds", "mean_s", self.mean_s, low=0.0, open_low=True)
        _check_finite("ClientSpeeds", "shape", self.shape, low=1.0, open_low=True)
        _check_finite("ClientSpeeds", "jitter", self.jitter, low=0.0, open_low=False)
        _check_finite("ClientSpeeds", "min_s", self.min_s, low=0.0, open_low=False)

    def client_mean(self, client: int, *, seed: int) -> float:
        """Client ``client``'s mean task time ``t_c`` (without ``min_s``)."""
        u = float(numpy_rng(seed, client, "speed").random())
        scale = (self.shape - 1.0) / self.shape
        return float(self.mean_s * scale * (1.0 - u) ** (-1.0 / self.shape))

    def delay(self, client: int, *, seed: int, round_: int) -> float:
        base = self.client_mean(client, seed=seed)
        if self.jitter == 0.0:
            return self.min_s + base
        s = self.jitter
        j = float(numpy_rng(seed, round_, client, "delay").lognormal(-(s**2) / 2.0, s))
        return self.min_s + base * j


@dataclass(frozen=True, eq=False)
class FractionSampler:
    """The simulated population's client sampling: :func:`select_clients` as client ids.

    >>> import torch
    >>> from velocity.sim.population import ClientPopulation
    >>> pop = ClientPopulation(torch.arange(10), torch.arange(11))
    >>> FractionSampler(pop, fraction=0.3, min_clients=1, seed=0).sample(1)
    ['client-1', 'client-6', 'client-7']
    """

    population: Population
    fraction: float = 1.0
    min_clients: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigurationError(f"client_fraction must be in (0, 1]; got {self.fraction}")
        if self.min_clients < 1:
            raise ConfigurationError(f"min_clients must be >= 1; got {self.min_clients}")
        n = self.population.num_clients
        if n > MAX_CLIENTS:
            raise ConfigurationError(f"num_clients must be <= {MAX_CLIENTS}; got {n}")
        k = clients_per_round(n, self.fraction, self.min_clients)
        if k > MAX_CLIENTS_PER_ROUND:
            raise ConfigurationError(
                f"{k} clients per round (client_fraction={self.fraction} of {n}) exceed the "
                f"limit of {MAX_CLIENTS_PER_ROUND}; lower client_fraction"
            )

    def sample(self, round_: int) -> list[str]:
        picked = select_clients(
            self.population.num_clients,
            self.fraction,
            self.min_clients,
            seed=self.seed,
            round_=round_,
        )
        return [self.population.client_id(int(i)) for i in picked.tolist()]


@dataclass(frozen=True)
class PoissonSampler:
    """Poisson client sampling: each client takes part in a round independently with
    probability ``rate`` (the sampling that DP-FedAvg's add/remove-one accounting assumes).

    The round's draw comes from ``(seed, round, "poisson-select")``; the number of clients
    varies from round to round (it may be zero: the round is then skipped, the model stays).

    >>> import torch
    >>> from velocity.sim.population import ClientPopulation
    >>> pop = ClientPopulation(torch.arange(10), torch.arange(11))
    >>> PoissonSampler(pop, rate=0.3, seed=0).sample(1)
    ['client-0', 'client-1']
    """

    population: Population
    rate: float
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.rate <= 1.0:
            raise ConfigurationError(f"Poisson sampling rate must be in (0, 1]; got {self.rate}")
        n = self.population.num_clients
        if n > MAX_CLIENTS:
            raise ConfigurationError(f"num_clients must be <= {MAX_CLIENTS}; got {n}")
        if self.rate * n > MAX_CLIENTS_PER_ROUND:
            raise ConfigurationError(
                f"{self.rate * n:.0f} expected clients per round exceed the limit of "
                f"{MAX_CLIENTS_PER_ROUND}; lower the rate"
            )

    @property
    def expected_clients(self) -> float:
        """``rate · N``: DP-FedAvg's fixed denominator."""
        return self.rate * self.population.num_clients

    def sample(self, round_: int) -> list[str]:
        n = self.population.num_clients
        picked = np.flatnonzero(
            numpy_rng(self.seed, round_, "poisson-select").random(n) < self.rate
        )
        return [self.population.client_id(int(i)) for i in picked.tolist()]
