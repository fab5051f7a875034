"""Differential privacy as stages of the round engine.

- :class:`ClipUpdate` (client stage): the client clips its update to L2 norm ``S``.
- :class:`LocalGaussianNoise` (client stage): local DP — the client clips to ``S`` and adds
  ``N(0, sigma^2)`` to every coordinate before anything leaves it.
- :class:`CentralDP` (server stage, sum-only): DP-FedAvg (McMahan et al. 2018, "Learning
  Differentially Private Recurrent Language Models"): every row clipped to ``S`` (by the
  server when it sees the rows; by the clients under secure aggregation), summed, Gaussian
  noise ``N(0, (z S)^2)`` added to the sum, divided by a *fixed* denominator (the expected
  number of clients per round), with the accountant advanced and the budget checked before
  anything is released. Optionally adaptive clipping (Andrew et al. 2021, "Differentially
  Private Learning with Adaptive Clipping"): ``S`` follows the ``target_quantile`` of the
  update norms through a noised count of unclipped clients, and that count's noise is part
  of the accounting.

Randomness comes from ``ctx.generator(purpose)`` (``(seed, round, [client], purpose)``).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from velocity._validation import Boolean, Constraint, NoneOr, Real, check_parameters
from velocity.errors import ConfigurationError, ValidationError
from velocity.privacy._accounting import PrivacyAccountant
from velocity.strategies import RoundBatch
from velocity.types import ParamSpec, StageContext, StageState

__all__ = [
    "CentralDP",
    "ClipUpdate",
    "LocalGaussianNoise",
    "adaptive_noise_split",
    "clip_in_place",
    "quiet_accounting",
]


@contextlib.contextmanager
def quiet_accounting() -> Iterator[None]:
    """Silence ``dp-accounting``'s per-order warnings ("failed to converge ... Excluding this
    order") while it computes: the library drops those RDP orders itself and the epsilon is
    still valid; a calibration would print hundreds of them."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(level)


def clip_in_place(row: Tensor, bound: float) -> float:
    """Scale ``row`` to L2 norm ``<= bound`` in place; return its norm before clipping.

    A non-finite row becomes zero (its norm is reported as ``inf``): it can carry no
    information past the clipping bound either way.

    >>> import torch
    >>> row = torch.tensor([3.0, 4.0]); clip_in_place(row, 1.0), row.tolist()
    (5.0, [0.6000000238418579, 0.800000011920929])
    """
    norm = float(torch.linalg.vector_norm(row.double()))
    if not math.isfinite(norm):
        row.zero_()
        return math.inf
    if norm > bound:
        row.mul_(bound / norm)
    return norm


@dataclass(frozen=True)
class ClipUpdate:
    """Client stage: clip the client's update to L2 norm ``clip`` (DP-FedAvg's client side).

    Metrics: ``norm`` (before clipping) and ``clipped`` (1.0 when it was scaled down).

    >>> import torch
    >>> from velocity.types import ParamSpec, StageContext
    >>> ctx = StageContext(0, 1, 0, ParamSpec.from_sizes({"w": 2}), torch.zeros(2), "c", 0)
    >>> row, _, metrics = ClipUpdate(1.0).apply(torch.tensor([0.0, 2.0]), {}, ctx)
    >>> row.tolist(), metrics
    ([0.0, 1.0], {'norm': 2.0, 'clipped': 1.0})
    """

    clip: float

    _constraints: ClassVar[Mapping[str, Constraint]] = {"clip": Real(low=0, low_open=True)}

    def __post_init__(self) -> None:
        check_parameters(self)

    @property
    def name(self) -> str:
        return "dp_clip"

    def init(self, spec: ParamSpec) -> StageState:
        return {}

    def apply(
        self, x: Tensor, state: StageState, ctx: StageContext
    ) -> tuple[Tensor, StageState, Mapping[str, Any]]:
        norm = clip_in_place(x, self.clip)
        return x, state, {"norm": norm, "clipped": float(norm > self.clip)}


@dataclass(frozen=True)
class LocalGaussianNoise:
    """Client stage of local DP: clip to ``clip``, then add ``N(0, sigma^2)`` per coordinate.

    The noise is drawn from ``ctx.generator("local_dp")`` (the client's own stream). One
    round is the Gaussian mechanism with noise multiplier ``z = sigma / clip`` under
    replace-one adjacency on the client's data (two clipped updates differ by up to
    ``2 clip``, which the accountant applies); :func:`velocity.privacy.plan_privacy`
    calibrates ``sigma``.

    >>> import torch
    >>> from velocity.types import ParamSpec, StageContext
    >>> ctx = StageContext(0, 1, 0, ParamSpec.from_sizes({"w": 4}), torch.zeros(4), "c", 0)
    >>> row, _, m = LocalGaussianNoise(clip=1.0, sigma=0.0).apply(torch.full((4,), 1.0), {}, ctx)
    >>> row.tolist(), m["clipped"]
    ([0.5, 0.5, 0.5, 0.5], 1.0)
    """

    clip: float
    sigma: float

    _constraints: ClassVar[Mapping[str, Constraint]] = {
        "clip": Real(low=0, low_open=True),
        "sigma": Real(low=0),
    }

    def __post_init__(self) -> None:
        check_parameters(self)

    @property
    def name(self) -> str:
        return "local_dp"

    def init(self, spec: ParamSpec) -> StageState:
        return {}

    def apply(
        self, x: Tensor, state: StageState, ctx: StageContext
    ) -> tuple[Tensor, StageState, Mapping[str, Any]]:
        norm = clip_in_place(x, self.clip)
        if self.sigma > 0:
            noise = torch.randn(
                x.shape, generator=ctx.generator("local_dp"), dtype=x.dtype, device=x.device
            )
            x.add_(noise, alpha=self.sigma)
        return x, state, {"norm": norm, "clipped": float(norm > self.clip)}


def adaptive_noise_split(noise_multiplier: float, count_stddev: float) -> float:
    """The update's noise multiplier ``z_Δ`` when the total (accounted) one is ``z`` and the
    unclipped count is noised with standard deviation ``σ_b`` (Andrew et al. 2021, Thm. 1).

    Releasing the sum (sensitivity ``S``, noise ``z_Δ S``) and the count of unclipped clients
    (each contributes ``b_i − 1/2``, sensitivity ``1/2``, noise ``σ_b``) to the same sampled
    clients is one Gaussian mechanism with ``z = (z_Δ^-2 + (2σ_b)^-2)^(-1/2)``; so
    ``z_Δ = (z^-2 − (2σ_b)^-2)^(-1/2)``, which needs ``2 σ_b > z``.

    >>> round(adaptive_noise_split(1.0, 5.0), 6)
    1.005038
    >>> adaptive_noise_split(1.0, 0.4)
    Traceback (most recent call last):
        ...
    velocity.errors.ConfigurationError: adaptive clipping: the unclipped-count noise \
count_stddev=0.4 must exceed noise_multiplier/2 = 0.5 (Andrew et al. 2021 use \
expected clients per round / 20); raise it or lower noise_multiplier
    """
    if not (noise_multiplier > 0 and count_stddev > 0):
        raise ConfigurationError(
            "adaptive clipping needs noise_multiplier > 0 and count_stddev > 0; got "
            f"{noise_multiplier} and {count_stddev}"
        )
    rest = noise_multiplier**-2 - (2.0 * count_stddev) ** -2
    if rest <= 0:
        raise ConfigurationError(
            f"adaptive clipping: the unclipped-count noise count_stddev={count_stddev:g} must "
            f"exceed noise_multiplier/2 = {noise_multiplier / 2:g} (Andrew et al. 2021 use "
            "expected clients per round / 20); raise it or lower noise_multiplier"
        )
    return float(rest**-0.5)


@dataclass(frozen=True, eq=False)
class CentralDP:
    """Server stage of DP-FedAvg: clip, sum, noise, fixed denominator; the accountant steps.

    A *sum-only* pre-stage: it sets the batch's aggregate (the strategy's rule is then not
    run, see :class:`velocity.strategies.AggregateStage`), so only mean-based strategies
    (FedAvg and its server optimizers) may use it — the builder checks. When the rows are
    visible the server clips each to the current bound (whatever the clients did: a client
    cannot exceed the sensitivity); under secure aggregation (``notes["sum"]`` set by the
    unmasking stage) the clients clipped, and the sum is noised after unmasking.

    The aggregate is ``(Σ clip(Δ_i) + N(0, (z_Δ S)^2 I)) / denominator``: the denominator is
    the expected number of clients per round (``q N`` under Poisson sampling, ``m`` for a
    fixed-size sample), fixed so that one client's presence changes the sum only
    (McMahan et al. 2018). ``z_Δ = noise_multiplier`` with fixed clipping; with adaptive
    clipping it is :func:`adaptive_noise_split` of it, so ``noise_multiplier`` is always the
    one the accountant composes.

    Before releasing anything the accountant checks that this round keeps epsilon within the
    budget and raises :class:`~velocity.privacy.PrivacyBudgetExceededError` otherwise (the
    round fails, the model and the state stay). State: ``clip`` (the current bound) and
    ``noise_multipliers`` (one per accounted round, the accountant's record).

    Metrics: ``epsilon``, ``delta``, ``noise_multiplier``, ``noise_std`` (of the sum),
    ``clip`` (the bound used), ``denominator`` and, with adaptive clipping,
    ``unclipped_fraction`` (the *noised* estimate; the exact one is private) and
    ``next_clip``.
    """

    accountant: PrivacyAccountant
    clip: float
    denominator: float
    adaptive: bool = False
    target_quantile: float = 0.5
    clip_lr: float = 0.2
    count_stddev: float | None = None
    client_noise: bool = False
    update_noise_multiplier: float = field(init=False)

    _constraints: ClassVar[Mapping[str, Constraint]] = {
        "clip": Real(low=0, low_open=True),
        "denominator": Real(low=0, low_open=True),
        "target_quantile": Real(low=0, high=1),
        "clip_lr": Real(low=0, low_open=True),
        "count_stddev": NoneOr(Real(low=0, low_open=True)),
        "adaptive": Boolean(),
        "client_noise": Boolean(),
    }

    def __post_init__(self) -> None:
        if not isinstance(self.accountant, PrivacyAccountant):
            raise ConfigurationError(
                f"CentralDP.accountant must be a PrivacyAccountant; got {self.accountant!r}"
            )
        check_parameters(self, self._constraints)
        z = float(self.accountant.noise_multiplier)
        if self.adaptive:
            if self.count_stddev is None:
                object.__setattr__(self, "count_stddev", self.denominator / 20.0)
            assert self.count_stddev is not None
            z = adaptive_noise_split(z, self.count_stddev)
        object.__setattr__(self, "update_noise_multiplier", z)

    @property
    def name(self) -> str:
        return "central_dp"

    def init(self, spec: ParamSpec) -> StageState:
        return {
            "clip": torch.tensor(float(self.clip), dtype=torch.float64),
            "noise_multipliers": torch.zeros(0, dtype=torch.float64),
        }

    def apply(
        self, x: RoundBatch, state: StageState, ctx: StageContext
    ) -> tuple[RoundBatch, StageState, Mapping[str, Any]]:
        with quiet_accounting():
            return self._apply(x, state, ctx)

    def _apply(
        self, x: RoundBatch, state: StageState, ctx: StageContext
    ) -> tuple[RoundBatch, StageState, Mapping[str, Any]]:
        bound = float(state["clip"])
        accountant = self.accountant
        accountant.restore([float(z) for z in state["noise_multipliers"].tolist()])
        summed = x.notes.get("sum")
        z_round = accountant.noise_multiplier
        if self.client_noise:
            # Distributed DP: each client added N(0, (z S)^2 / denominator); the sum holds
            # count such shares, so this round's noise multiplier is z sqrt(count/denominator)
            # — clients that dropped before masking added nothing, and the accountant knows.
            count = x.notes.get("secagg_count")
            if summed is None or not isinstance(count, int):
                raise ConfigurationError(
                    "CentralDP: distributed noise needs secure aggregation's sum and count"
                )
            z_round = accountant.noise_multiplier * math.sqrt(count / self.denominator)
        accountant.check_next(z_round)
        unclipped: float | None = None
        if summed is None:
            if x.update is not None:
                raise ValidationError(
                    "CentralDP: another stage aggregated already without leaving the sum "
                    "(notes['sum']); central DP needs the plain sum of clipped rows"
                )
            rows = x.rows
            norms = torch.linalg.vector_norm(rows.double(), dim=1)
            finite = torch.isfinite(norms)
            scale = torch.where(
                finite, torch.clamp(bound / norms.clamp_min(1e-300), max=1.0), 0.0
            ).to(rows.dtype)
            rows.nan_to_num_(0.0, 0.0, 0.0).mul_(scale[:, None])
            total = rows.sum(0, dtype=torch.float64)
            unclipped = float(((norms <= bound) & finite).sum())
        else:
            if not isinstance(summed, Tensor) or summed.shape != (ctx.spec.d,):
                raise ValidationError("CentralDP: notes['sum'] must be the (d,) sum of the rows")
            total = summed.to(torch.float64)
            if self.adaptive:
                raise ConfigurationError(
                    "CentralDP: adaptive clipping needs the server to see the update norms; "
                    "under secure aggregation use clipping: fixed"
                )
        generator = ctx.generator("central_dp")
        if self.client_noise:
            std = z_round * bound
            update = (total / self.denominator).to(torch.float32)
        else:
            std = self.update_noise_multiplier * bound
            noise = torch.randn(total.shape, generator=generator, dtype=torch.float64)
            update = ((total + std * noise) / self.denominator).to(torch.float32)
        metrics: dict[str, Any] = {
            "noise_multiplier": z_round,
            "noise_std": std,
            "clip": bound,
            "denominator": self.denominator,
        }
        next_bound = bound
        if self.adaptive and unclipped is not None:
            assert self.count_stddev is not None
            count_noise = float(torch.randn((), generator=generator, dtype=torch.float64))
            estimate = (unclipped + self.count_stddev * count_noise) / self.denominator
            next_bound = bound * math.exp(-self.clip_lr * (estimate - self.target_quantile))
            metrics["unclipped_fraction"] = estimate
            metrics["next_clip"] = next_bound
        epsilon = accountant.step(z_round)
        metrics["epsilon"] = epsilon
        metrics["delta"] = accountant.delta
        x.update = update
        x.notes["aggregated_by"] = "central_dp"
        new_state = {
            "clip": torch.tensor(next_bound, dtype=torch.float64),
            "noise_multipliers": torch.tensor(accountant.state(), dtype=torch.float64),
        }
        return x, new_state, metrics
