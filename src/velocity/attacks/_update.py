r"""Attacks that craft their clients' updates (model poisoning, in the literature's terms).

Notation: a round has ``N`` participants, ``f`` of them adversarial; ``g_1..g_h`` are the
honest updates (``h = N - f``), ``μ`` and ``σ`` their coordinate-wise mean and standard
deviation (``σ`` with Bessel's correction, 0 when ``h = 1``), and ``u`` an adversary's own
honest update. Every crafted row is float32.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import ClassVar, Final, Literal

import torch
from torch import Tensor

from velocity._validation import Constraint, Integer, NoneOr, OneOf, Real
from velocity.attacks._base import AttackContext, UpdateAttack
from velocity.errors import ValidationError

MAX_SYBILS: Final = 10_000
"""Largest ``sybil_nodes`` count: each identity adds a ``(d,)`` row to the round."""

__all__ = [
    "Empire",
    "Gaussian",
    "GaussianNoise",
    "Inf",
    "Little",
    "Mimic",
    "MinMax",
    "MinSum",
    "ModelPoisoning",
    "SignFlip",
    "SybilNodes",
]


def _mean(honest: Tensor) -> Tensor:
    return honest.to(torch.float64).mean(dim=0)


def _std(honest: Tensor) -> Tensor:
    if honest.shape[0] < 2:
        return torch.zeros(honest.shape[1], dtype=torch.float64, device=honest.device)
    return honest.to(torch.float64).std(dim=0, correction=1)


def _sq_distances(g: Tensor) -> Tensor:
    """float64 pairwise squared distances from the Gram matrix (clamped at 0).

    Rounding can leave equal rows a tiny positive distance apart; harmless here, because a
    zero direction ``p`` gives ``γ = 0`` whatever the threshold.
    """
    sq = (g * g).sum(dim=1)
    return (sq[:, None] + sq[None, :] - 2.0 * (g @ g.T)).clamp_min_(0.0)


def _repeat(row: Tensor, f: int) -> Tensor:
    return row.to(torch.float32).unsqueeze(0).expand(f, -1).clone()


# --------------------------------------------------------------------------- VelocityFL four
@dataclass(frozen=True)
class ModelPoisoning(UpdateAttack):
    r"""Boosted reversed update: :math:`\tilde u = -\beta\, u`.

    Each adversarial client trains honestly, then submits its update reversed and scaled by
    the boost ``β`` (explicit boosting, Bhagoji et al. 2019, "Analyzing Federated Learning
    through an Adversarial Lens"; a boost of ``N/f`` survives plain averaging). ``intensity``
    of :meth:`VelocityServer.simulate_attack` is ``β``. Severity: ``β``.
    """

    name: ClassVar[str] = "model_poisoning"
    needs_own: ClassVar[bool] = True
    intensity_field: ClassVar[str | None] = "boost"
    boost: float = 10.0
    _constraints: ClassVar[Mapping[str, Constraint]] = {"boost": Real(low=0.0, low_open=True)}

    def _craft(self, ctx: AttackContext) -> Tensor:
        assert ctx.own is not None
        return -self.boost * ctx.own

    def severity(self) -> float:
        return self.boost


@dataclass(frozen=True)
class SybilNodes(UpdateAttack):
    r"""``count`` fake identities join the round and all submit :math:`v = -s\,\mu`.

    A Sybil attack (Douceur 2002; in FL, Fung et al. 2020, "The Limitations of Federated
    Learning in Sybil Settings"): one adversary registers ``count`` colluding identities that
    submit one coordinated update, the honest mean reversed and scaled by ``s``. The
    identities are *added* to the round's participants (ids ``sybil-0``, ``sybil-1``, …) and
    claim the mean sample count of the honest participants. Identical rows are what
    Krum-style rules are most exposed to. ``intensity`` sets ``s``. Severity: ``s``.
    """

    name: ClassVar[str] = "sybil_nodes"
    needs_honest: ClassVar[bool] = True
    intensity_field: ClassVar[str | None] = "scale"
    count: int = 1
    scale: float = 1.0
    _constraints: ClassVar[Mapping[str, Constraint]] = {
        # each identity adds a row of the round's (n, d) stack
        "count": Integer(low=1, high=MAX_SYBILS),
        "scale": Real(),
    }

    def _craft(self, ctx: AttackContext) -> Tensor:
        return _repeat(-self.scale * _mean(ctx.honest), ctx.num_byzantine)

    def severity(self) -> float:
        return self.scale


@dataclass(frozen=True)
class GaussianNoise(UpdateAttack):
    r"""The adversary's own update plus Gaussian noise: :math:`\tilde u = u + \epsilon`,
    :math:`\epsilon \sim \mathcal N(0, \sigma^2 I)`.

    ``sigma`` is the noise scale (``intensity`` of ``simulate_attack``). Each adversarial row
    gets its own noise. Severity: ``σ``.
    """

    name: ClassVar[str] = "gaussian_noise"
    needs_own: ClassVar[bool] = True
    intensity_field: ClassVar[str | None] = "sigma"
    sigma: float = 0.1
    _constraints: ClassVar[Mapping[str, Constraint]] = {"sigma": Real(low=0.0)}

    def _craft(self, ctx: AttackContext) -> Tensor:
        assert ctx.own is not None
        noise = torch.randn(ctx.own.shape, generator=ctx.generator, dtype=torch.float32)
        return ctx.own + self.sigma * noise.to(ctx.own.device)

    def severity(self) -> float:
        return self.sigma


# --------------------------------------------------------------------------- ByzPy seven
@dataclass(frozen=True)
class Empire(UpdateAttack):
    r"""Inner-product manipulation: :math:`\tilde u = s\,\mu`.

    Xie, Koyejo & Gupta 2020, "Fall of Empires: Breaking Byzantine-tolerant SGD by Inner
    Product Manipulation". With ``s < 0`` the aggregate's inner product with the true
    gradient turns negative. ByzPy's ``EmpireAttack(scale=-1)``. Severity: ``|s|``.
    """

    name: ClassVar[str] = "empire"
    needs_honest: ClassVar[bool] = True
    scale: float = -1.0
    _constraints: ClassVar[Mapping[str, Constraint]] = {"scale": Real()}

    def _craft(self, ctx: AttackContext) -> Tensor:
        return _repeat(self.scale * _mean(ctx.honest), ctx.num_byzantine)

    def severity(self) -> float:
        return abs(self.scale)


@dataclass(frozen=True)
class Little(UpdateAttack):
    r"""A Little Is Enough: :math:`\tilde u = \mu + z_{\max}\,\sigma`.

    Baruch, Baruch & Goldberg 2019. With ``s = ⌊N/2⌋ + 1 − f`` and
    :math:`z_{\max} = \Phi^{-1}((N - s)/N)` the crafted row stays within the spread that
    coordinate-wise and distance-based rules accept. ``f`` and ``N`` default to the round's
    adversarial rows (of every attack, not only this one's) and all its rows (ByzPy's
    ``LittleAttack(f, N)``). ``z`` fixes the factor
    instead of the formula (ByzFL's ``ALittleIsEnough(tau=1.5)``; benchmarks that tune the
    attack, as Allouah et al. 2023 do, search over it). Severity: the factor used.
    """

    name: ClassVar[str] = "little"
    needs_honest: ClassVar[bool] = True
    f: int | None = None
    N: int | None = None
    z: float | None = None
    _constraints: ClassVar[Mapping[str, Constraint]] = {
        "f": NoneOr(Integer(low=1)),
        "N": NoneOr(Integer(low=2)),
        "z": NoneOr(Real()),
    }

    @staticmethod
    def z_max(f: int, n: int) -> float:
        """:math:`\\Phi^{-1}((n - s)/n)` with ``s = ⌊n/2⌋ + 1 − f``.

        >>> round(Little.z_max(10, 50), 4)
        0.4677
        """
        s = n // 2 + 1 - f
        p = (n - s) / n
        if not 0.0 < p < 1.0:
            raise ValidationError(
                f"little: needs 0 < (N - s)/N < 1 with s = N//2 + 1 - f; got N={n}, f={f}"
            )
        return NormalDist().inv_cdf(p)

    def _craft(self, ctx: AttackContext) -> Tensor:
        z = self.factor(ctx)
        return _repeat(_mean(ctx.honest) + z * _std(ctx.honest), ctx.num_byzantine)

    def _fn(self, ctx: AttackContext) -> tuple[int, int]:
        f = self.f if self.f is not None else ctx.round_byzantine
        return f, self.N if self.N is not None else ctx.num_participants

    def factor(self, ctx: AttackContext) -> float:
        """``z`` when set, else :meth:`z_max` of the round's ``(f, N)``."""
        return self.z if self.z is not None else self.z_max(*self._fn(ctx))

    def severity_for(self, ctx: AttackContext) -> float:
        return self.factor(ctx)


@dataclass(frozen=True)
class SignFlip(UpdateAttack):
    r""":math:`\tilde u = s\,u` (``s = -1``: the sign-flipping attack; Allen-Zhu et al. 2021).

    ByzPy's ``SignFlipAttack(scale=-1)``. Severity: ``|s|``.
    """

    name: ClassVar[str] = "sign_flip"
    needs_own: ClassVar[bool] = True
    scale: float = -1.0
    _constraints: ClassVar[Mapping[str, Constraint]] = {"scale": Real()}

    def _craft(self, ctx: AttackContext) -> Tensor:
        assert ctx.own is not None
        return self.scale * ctx.own

    def severity(self) -> float:
        return abs(self.scale)


@dataclass(frozen=True)
class Gaussian(UpdateAttack):
    r"""Pure noise: every coordinate of every adversarial row drawn from :math:`\mathcal N(m, s^2)`.

    ByzPy's ``GaussianAttack(mu, sigma)`` (the "Gaussian" Byzantine worker of Blanchard et al.
    2017). Severity: ``σ``.
    """

    name: ClassVar[str] = "gaussian"
    mu: float = 0.0
    sigma: float = 1.0
    _constraints: ClassVar[Mapping[str, Constraint]] = {"mu": Real(), "sigma": Real(low=0.0)}

    def _craft(self, ctx: AttackContext) -> Tensor:
        shape = (ctx.num_byzantine, ctx.dim)
        noise = torch.randn(shape, generator=ctx.generator, dtype=torch.float32)
        return (self.mu + self.sigma * noise).to(ctx.honest.device)

    def severity(self) -> float:
        return self.sigma


@dataclass(frozen=True)
class Inf(UpdateAttack):
    """Every coordinate ``+inf`` (ByzPy's ``InfAttack``): tests non-finite handling.

    Every rule drops non-finite rows and counts them against its ``f`` (the kernels' one
    non-finite policy), so it survives as long as the inf rows do not exceed ``f`` (FedAvg's
    default ``nonfinite="drop"``: any number short of all); the round's
    :class:`AttackResult` lists the dropped identities. Beyond ``f`` the round is refused
    with a ``ValidationError``; with FedAvg's filter off (``nonfinite="propagate"``) the
    model becomes non-finite. Severity: ``inf``.
    """

    name: ClassVar[str] = "inf"

    def _craft(self, ctx: AttackContext) -> Tensor:
        return torch.full(
            (ctx.num_byzantine, ctx.dim), math.inf, dtype=torch.float32, device=ctx.honest.device
        )

    def severity(self) -> float:
        return math.inf


@dataclass(frozen=True)
class Mimic(UpdateAttack):
    """Copy honest participant ``epsilon``'s update (Karimireddy, He & Jaggi 2022).

    Every adversarial row equals ``g_epsilon``; over-representing one honest client is harmful
    under heterogeneous data. ``epsilon`` indexes the round's honest rows in order.
    """

    name: ClassVar[str] = "mimic"
    needs_honest: ClassVar[bool] = True
    epsilon: int = 0
    _constraints: ClassVar[Mapping[str, Constraint]] = {"epsilon": Integer(low=0)}

    def _craft(self, ctx: AttackContext) -> Tensor:
        h = ctx.honest.shape[0]
        if self.epsilon >= h:
            raise ValidationError(
                f"mimic: epsilon={self.epsilon} must index one of the {h} honest updates"
            )
        return _repeat(ctx.honest[self.epsilon], ctx.num_byzantine)


# ------------------------------------------------------------- Shejwalkar & Houmansadr 2021
Direction = Literal["unit_vec", "std", "sign"]


def _direction(kind: str, mu: Tensor, sigma: Tensor) -> Tensor:
    if kind == "unit_vec":
        norm = mu.norm()
        return -mu / norm if norm > 0 else torch.zeros_like(mu)
    if kind == "std":
        return -sigma
    return -torch.sign(mu)


def _largest_root(a: float, b: float, c: float) -> float:
    """Largest γ >= 0 with ``a γ² + 2 b γ + c <= 0`` given ``c <= 0`` (``a >= 0``)."""
    if a <= 0.0:
        return 0.0  # p = 0: every γ gives the same row μ
    disc = max(b * b - a * c, 0.0)
    return max((-b + math.sqrt(disc)) / a, 0.0)


@dataclass(frozen=True)
class _Agnostic(UpdateAttack):
    needs_honest: ClassVar[bool] = True
    perturbation: Direction = "std"
    _constraints: ClassVar[Mapping[str, Constraint]] = {
        "perturbation": OneOf("unit_vec", "std", "sign")
    }

    def gamma(self, honest: Tensor) -> float:
        raise NotImplementedError

    def _parts(self, honest: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        g = honest.to(torch.float64)
        mu = g.mean(dim=0)
        p = _direction(self.perturbation, mu, _std(honest))
        return g, mu, p

    def _craft(self, ctx: AttackContext) -> Tensor:
        return self.craft_with_severity(ctx)[0]

    def craft_with_severity(self, ctx: AttackContext) -> tuple[Tensor, float]:
        """The crafted rows and the round's ``γ``, computed once."""
        self._check(ctx)
        _, mu, p = self._parts(ctx.honest)
        gamma = self.gamma(ctx.honest)
        return _repeat(mu + gamma * p, ctx.num_byzantine), gamma

    def severity_for(self, ctx: AttackContext) -> float:
        """The round's ``γ``."""
        return self.gamma(ctx.honest)


@dataclass(frozen=True)
class MinMax(_Agnostic):
    r"""Min-Max (Shejwalkar & Houmansadr 2021, "Manipulating the Byzantine", NDSS).

    :math:`\tilde u = \mu + \gamma\,p` with the largest :math:`\gamma \ge 0` such that
    :math:`\max_i \lVert \tilde u - g_i\rVert \le \max_{i,j} \lVert g_i - g_j\rVert`: the
    crafted row is no farther from any honest update than two honest updates are from each
    other. ``p`` is the perturbation direction: ``"std"`` (``-σ``, the paper's strongest on
    MNIST), ``"unit_vec"`` (``-μ/‖μ‖``) or ``"sign"`` (``-sign μ``). Each constraint is a
    quadratic in ``γ``, so ``γ`` is solved in closed form (the paper approximates it by
    bisection). All adversarial rows are equal.
    """

    name: ClassVar[str] = "min_max"

    def gamma(self, honest: Tensor) -> float:
        g, mu, p = self._parts(honest)
        threshold = float(_sq_distances(g).max())
        diff = mu - g  # (h, d)
        a = float(p @ p)
        roots = [
            _largest_root(a, float(diff[i] @ p), float(diff[i] @ diff[i]) - threshold)
            for i in range(g.shape[0])
        ]
        return min(roots)


@dataclass(frozen=True)
class MinSum(_Agnostic):
    r"""Min-Sum (Shejwalkar & Houmansadr 2021).

    :math:`\tilde u = \mu + \gamma\,p` with the largest :math:`\gamma \ge 0` such that
    :math:`\sum_i \lVert \tilde u - g_i\rVert^2 \le \max_i \sum_j \lVert g_i - g_j\rVert^2`
    (the crafted row's total squared distance to the honest updates is no larger than an honest
    update's). Closed form as in :class:`MinMax`; same ``perturbation`` choices.
    """

    name: ClassVar[str] = "min_sum"

    def gamma(self, honest: Tensor) -> float:
        g, mu, p = self._parts(honest)
        threshold = float(_sq_distances(g).sum(dim=1).max())
        diff = mu - g
        h = g.shape[0]
        a = h * float(p @ p)
        b = float(diff.sum(dim=0) @ p)
        c = float((diff * diff).sum()) - threshold
        return _largest_root(a, b, c)
