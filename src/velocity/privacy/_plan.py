"""From privacy settings to what a federation runs: stages, training options, the accountant.

:func:`plan_privacy` resolves a :class:`PrivacySettings` against the federation it protects
(population, sampling, client data sizes, rounds): it calibrates the noise multiplier when
none is given (never overshooting the budget), refuses a configuration whose planned rounds
would exceed it (naming the epsilon they would reach), and returns a :class:`PrivacyPlan`
holding the client stages, the server stage, the DP-SGD settings of local training and a
round annotator that reports epsilon after every round.

Modes
-----
``central``
    Client-level DP-FedAvg (McMahan et al. 2018): the server clips each update to
    ``max_grad_norm`` and noises the sum (:class:`~velocity.privacy.CentralDP`). The
    guarantee is per client, over the clients' sampling: Poisson sampling with add/remove-one
    adjacency, or a fixed-size sample without replacement with replace-one adjacency.
``local``
    Local DP: each client clips to ``max_grad_norm`` and adds Gaussian noise itself
    (:class:`~velocity.privacy.LocalGaussianNoise`), so nothing it sends needs a trusted
    server. Replace-one adjacency on the client's data (two clipped updates differ by up to
    ``2 S``; the accountant applies it), no amplification by sampling, composed over every
    round (a client may be asked each round). With ``accountant: pld`` the calibration is the
    exact one of the Gaussian mechanism (Balle & Wang 2018).
``dp_sgd``
    Example-level DP-SGD inside local training (Abadi et al. 2016): per-example gradients
    clipped to ``max_grad_norm``, noised, Poisson-sampled batches. The guarantee is per
    training example of each client, composed over its local steps and every round; the
    reported epsilon is the worst over the clients' data sizes. No amplification by client
    sampling is claimed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from velocity._validation import Boolean, Constraint, NoneOr, OneOf, Real, check_parameters
from velocity.errors import ConfigurationError
from velocity.privacy._accounting import (
    PrivacyAccountant,
    SamplingScheme,
    calibrate_noise_multiplier,
    compute_epsilon,
)
from velocity.privacy._stages import (
    CentralDP,
    ClipUpdate,
    LocalGaussianNoise,
    quiet_accounting,
)

if TYPE_CHECKING:
    from torch import Tensor

    from velocity.strategies import RoundBatch
    from velocity.types import RoundResult, Stage

__all__ = ["PrivacyPlan", "PrivacySettings", "plan_privacy"]


Mode = Literal["central", "local", "dp_sgd"]
MODES: tuple[str, ...] = ("central", "local", "dp_sgd")


@dataclass(frozen=True)
class PrivacySettings:
    """What the user asked for (the YAML ``privacy:`` section, see ``docs/privacy.md``).

    ``epsilon`` is the budget for the whole run at ``delta``; ``noise_multiplier`` is
    calibrated from it when ``None``. ``max_grad_norm`` is the clipping bound: of each
    client's update (central, local) or of each example's gradient (dp_sgd).
    ``client_sampling`` is how the server picks each round's clients in central mode:
    ``fixed`` (``clients_per_round`` without replacement) or ``poisson`` (each client with
    probability ``client_fraction``). ``clipping: adaptive`` (central only) follows the
    ``target_quantile`` of the update norms (Andrew et al. 2021) with step ``clip_lr`` and
    the unclipped count noised with ``count_stddev`` (default: expected clients / 20).
    ``distributed`` (central mode under secure aggregation) has every client add its share
    of the noise instead of the server.
    """

    mode: Mode = "central"
    epsilon: float = 1.0
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    noise_multiplier: float | None = None
    clipping: Literal["fixed", "adaptive"] = "fixed"
    accountant: Literal["rdp", "pld"] = "rdp"
    client_sampling: Literal["poisson", "fixed"] = "fixed"
    target_quantile: float = 0.5
    clip_lr: float = 0.2
    count_stddev: float | None = None
    distributed: bool = False

    _constraints: ClassVar[Mapping[str, Constraint]] = {
        "mode": OneOf(*MODES),
        "epsilon": Real(low=0, low_open=True),
        "delta": Real(low=0, high=1, low_open=True, high_open=True),
        "max_grad_norm": Real(low=0, low_open=True),
        "noise_multiplier": NoneOr(Real(low=0, low_open=True)),
        "clipping": OneOf("fixed", "adaptive"),
        "accountant": OneOf("rdp", "pld"),
        "client_sampling": OneOf("poisson", "fixed"),
        "target_quantile": Real(low=0, high=1),
        "clip_lr": Real(low=0, low_open=True),
        "count_stddev": NoneOr(Real(low=0, low_open=True)),
        "distributed": Boolean(),
    }

    def __post_init__(self) -> None:
        check_parameters(self)
        if self.clipping == "adaptive" and self.mode != "central":
            raise ConfigurationError(
                f"privacy.clipping: adaptive is for mode: central only; got mode: {self.mode}"
            )
        if self.distributed and self.mode != "central":
            raise ConfigurationError(
                f"privacy.distributed needs mode: central (with secure aggregation); got "
                f"mode: {self.mode}"
            )


@dataclass(frozen=True, eq=False)
class PrivacyPlan:
    """What a federation runs for its privacy settings (made by :func:`plan_privacy`).

    Attributes
    ----------
    settings : PrivacySettings
        With ``noise_multiplier`` resolved (calibrated or as given).
    calibrated : bool
        Whether the noise multiplier was calibrated from the budget.
    sampling : SamplingScheme
        What the accounting assumes of one round (clients for central/local, examples of
        the worst-case client for dp_sgd).
    client_stages : tuple of client stages
        Clipping (central under secure aggregation), local noise (local, distributed).
    server_stage : CentralDP or None
        The sum-only server stage (central mode).
    dp_sgd : tuple (clip, noise_multiplier) or None
        The local trainer's DP-SGD settings.
    planned_epsilon : float
        Epsilon after all the planned rounds.
    """

    settings: PrivacySettings
    calibrated: bool
    sampling: SamplingScheme
    rounds: int
    planned_epsilon: float
    client_stages: tuple[Stage[Tensor], ...] = ()
    server_stage: CentralDP | None = None
    dp_sgd: tuple[float, float] | None = None
    local_sigma: float | None = None
    _example_events: tuple[tuple[int, float, int], ...] = field(default=())

    @property
    def noise_multiplier(self) -> float:
        z = self.settings.noise_multiplier
        assert z is not None
        return z

    @property
    def server_stages(self) -> tuple[Stage[RoundBatch], ...]:
        return () if self.server_stage is None else (self.server_stage,)

    def epsilon_after(self, rounds: int) -> float:
        """Epsilon after ``rounds`` rounds (central: as the accountant composed them)."""
        with quiet_accounting():
            return self._epsilon_after(rounds)

    def _epsilon_after(self, rounds: int) -> float:
        s = self.settings
        if self.mode == "dp_sgd":
            return _dp_sgd_epsilon(self._example_events, self.noise_multiplier, s, rounds)
        return compute_epsilon(
            self.noise_multiplier,
            self.sampling,
            s.delta,
            rounds=rounds,
            accountant=s.accountant,
        )

    @property
    def mode(self) -> str:
        return self.settings.mode

    def summary(self, rounds: int, epsilon: float | None = None) -> dict[str, Any]:
        """The ``privacy`` object of ``summary.json`` after ``rounds`` rounds."""
        s = self.settings
        eps = self.epsilon_after(rounds) if epsilon is None else epsilon
        return {
            "enabled": True,
            "mode": s.mode,
            "epsilon": eps,
            "epsilon_budget": s.epsilon,
            "delta": s.delta,
            "noise_multiplier": self.noise_multiplier,
            "calibrated": self.calibrated,
            "max_grad_norm": s.max_grad_norm,
            "clipping": s.clipping,
            "sampling": self.sampling.kind,
            "sampling_rate": self.sampling.rate,
            "rounds": rounds,
            "accountant": s.accountant,
            "neighboring_relation": (
                "add_or_remove_one_example"
                if s.mode == "dp_sgd"
                else self.sampling.neighboring_relation
            ),
            "unit": "example" if s.mode == "dp_sgd" else "client",
            "orders": _orders(s.accountant),
            "local_sigma": self.local_sigma,
            "distributed": s.distributed,
        }

    def annotate(self, result: RoundResult, params: Tensor) -> RoundResult:
        """The round annotator: ``result.stages["privacy"]`` holds epsilon so far."""
        central = result.stages.get("central_dp", {})
        if "epsilon" in central:
            epsilon = float(central["epsilon"])
        elif self.server_stage is not None:
            # A skipped round released nothing: epsilon stays where the accountant is.
            epsilon = self.server_stage.accountant.epsilon
        else:
            epsilon = self.epsilon_after(_accounted_rounds(result, self.mode))
        stages = dict(result.stages)
        report = self.summary(result.round, epsilon=epsilon)
        report.pop("orders")  # summary.json lists them once
        stages["privacy"] = report
        return replace(result, stages=stages)


def _accounted_rounds(result: RoundResult, mode: str) -> int:
    # local / dp_sgd: a client may have been asked in every round so far (worst case).
    return result.round


def _orders(accountant: str) -> list[float] | None:
    if accountant != "rdp":
        return None
    from velocity.privacy._accounting import DEFAULT_RDP_ORDERS

    return [float(o) for o in DEFAULT_RDP_ORDERS]


@lru_cache(maxsize=4096)
def _example_epsilon(
    population: int, rate: float, steps: int, z: float, delta: float, accountant: str
) -> float:
    return compute_epsilon(
        z,
        SamplingScheme.poisson(population, rate),
        delta,
        rounds=steps,
        accountant=accountant,  # type: ignore[arg-type]
    )


def _dp_sgd_epsilon(
    events: Sequence[tuple[int, float, int]], z: float, s: PrivacySettings, rounds: int
) -> float:
    if rounds == 0:
        return 0.0
    return max(
        _example_epsilon(n, q, steps * rounds, z, s.delta, s.accountant) for n, q, steps in events
    )


@quiet_accounting()
def plan_privacy(
    settings: PrivacySettings,
    *,
    num_rounds: int,
    num_clients: int,
    clients_per_round: int,
    client_fraction: float,
    client_sizes: Sequence[int] = (),
    batch_size: int = 32,
    local_steps: int | None = None,
    local_epochs: int = 1,
    secure: bool = False,
) -> PrivacyPlan:
    """Resolve ``settings`` for a federation; see the module doc for the three modes.

    ``client_sizes`` (examples per client) and the local budget (``batch_size``,
    ``local_steps`` or ``local_epochs``) are needed for ``dp_sgd``; ``secure`` says the
    server sees only the sum (secure aggregation): clients clip, and with ``distributed``
    they add the noise. ``dp-accounting``'s per-order warnings are silenced meanwhile.

    Raises
    ------
    ConfigurationError
        If the planned rounds would exceed the budget with the given noise multiplier (the
        message names the epsilon they reach), or the budget cannot be met.
    """
    s = settings
    if s.mode == "central":
        if s.client_sampling == "poisson":
            sampling = SamplingScheme.poisson(num_clients, client_fraction)
            denominator = client_fraction * num_clients
        else:
            sampling = SamplingScheme.fixed(num_clients, clients_per_round)
            denominator = float(clients_per_round)
        z = s.noise_multiplier
        calibrated = z is None
        if z is None:
            z = calibrate_noise_multiplier(
                s.epsilon, s.delta, rounds=num_rounds, sampling=sampling, accountant=s.accountant
            )
        planned = compute_epsilon(z, sampling, s.delta, rounds=num_rounds, accountant=s.accountant)
        _check_budget(s, planned, num_rounds, z)
        resolved = replace(s, noise_multiplier=z)
        accountant = PrivacyAccountant(
            sampling=sampling,
            delta=s.delta,
            noise_multiplier=z,
            accountant=s.accountant,
            epsilon_budget=s.epsilon,
        )
        stage = CentralDP(
            accountant,
            clip=s.max_grad_norm,
            denominator=denominator,
            adaptive=s.clipping == "adaptive",
            target_quantile=s.target_quantile,
            clip_lr=s.clip_lr,
            count_stddev=s.count_stddev,
            client_noise=s.distributed,
        )
        client_stages: tuple[Stage[Tensor], ...] = ()
        if secure:
            if s.distributed:
                share = z * s.max_grad_norm / math.sqrt(denominator)
                client_stages = (LocalGaussianNoise(s.max_grad_norm, share),)
            else:
                client_stages = (ClipUpdate(s.max_grad_norm),)
        return PrivacyPlan(
            resolved, calibrated, sampling, num_rounds, planned, client_stages, stage
        )
    if s.mode == "local":
        sampling = SamplingScheme.full(1)
        z = s.noise_multiplier
        calibrated = z is None
        if z is None:
            # With accountant: pld this is the exact Gaussian calibration (Balle & Wang 2018;
            # the rounds compose into one Gaussian), valid for every epsilon, unlike the
            # classic sqrt(2 ln(1.25/delta))/epsilon, which holds only for epsilon < 1.
            z = calibrate_noise_multiplier(
                s.epsilon, s.delta, rounds=num_rounds, sampling=sampling, accountant=s.accountant
            )
        planned = compute_epsilon(z, sampling, s.delta, rounds=num_rounds, accountant=s.accountant)
        _check_budget(s, planned, num_rounds, z)
        # z = sigma / S; the replace-one sensitivity 2 S is the accountant's to apply.
        sigma = s.max_grad_norm * z
        return PrivacyPlan(
            replace(s, noise_multiplier=z),
            calibrated,
            sampling,
            num_rounds,
            planned,
            (LocalGaussianNoise(s.max_grad_norm, sigma),),
            local_sigma=sigma,
        )
    # dp_sgd
    if not client_sizes:
        raise ConfigurationError("privacy.mode: dp_sgd needs the clients' data sizes")
    events = sorted(
        {
            (
                int(n),
                min(1.0, batch_size / n),
                local_steps
                if local_steps is not None
                else local_epochs * math.ceil(n / batch_size),
            )
            for n in client_sizes
            if n > 0
        }
    )
    z = s.noise_multiplier
    calibrated = z is None
    if z is None:
        z = max(
            calibrate_noise_multiplier(
                s.epsilon,
                s.delta,
                rounds=steps * num_rounds,
                sampling=SamplingScheme.poisson(n, q),
                accountant=s.accountant,
            )
            for n, q, steps in events
        )
    worst = min(events, key=lambda e: e[0])
    planned = _dp_sgd_epsilon(events, z, s, num_rounds)
    _check_budget(s, planned, num_rounds, z)
    return PrivacyPlan(
        replace(s, noise_multiplier=z),
        calibrated,
        SamplingScheme.poisson(worst[0], worst[1]),
        num_rounds,
        planned,
        dp_sgd=(s.max_grad_norm, z),
        _example_events=tuple(events),
    )


def _check_budget(s: PrivacySettings, planned: float, rounds: int, z: float) -> None:
    if planned > s.epsilon * (1 + 1e-9):
        raise ConfigurationError(
            f"privacy budget exceeded before the run starts: {rounds} rounds with "
            f"noise_multiplier={z:g} reach epsilon={planned:.4g} > privacy.epsilon="
            f"{s.epsilon:g} (delta={s.delta:g}); raise noise_multiplier, lower "
            "training.num_rounds, or leave noise_multiplier out to calibrate it"
        )
