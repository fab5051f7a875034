"""velocity.attacks: every attack of the catalogue checked against its stated formula.

Every reference value is computed here, independently of the library's helpers, in plain
float64 numpy (brute force where the library uses a closed form).
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from velocity.attacks import (
    ATTACKS,
    AttackContext,
    Backdoor,
    DataAttack,
    Empire,
    Gaussian,
    GaussianNoise,
    Inf,
    LabelFlip,
    LabelFlipping,
    Little,
    Mimic,
    MinMax,
    MinSum,
    ModelPoisoning,
    SignFlip,
    SybilNodes,
    UpdateAttack,
)
from velocity.errors import ConfigurationError, ValidationError

try:  # an independent implementation of the normal quantile when available
    from scipy.stats import norm as _scipy_norm

    def ppf(p: float) -> float:
        return float(_scipy_norm.ppf(p))

except ImportError:  # pragma: no cover - scipy is a test dependency here

    def ppf(p: float) -> float:
        return statistics.NormalDist().inv_cdf(p)


FEW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PERTURBATIONS = ("unit_vec", "std", "sign")

# One instance of every update attack (with non-default parameters where they matter).
UPDATE_ATTACKS: tuple[UpdateAttack, ...] = (
    ModelPoisoning(boost=3.5),
    SybilNodes(count=2, scale=1.5),
    GaussianNoise(sigma=0.3),
    Empire(scale=-2.0),
    Little(),
    SignFlip(scale=-1.5),
    Gaussian(mu=0.5, sigma=2.0),
    Inf(),
    Mimic(epsilon=0),
    *(MinMax(perturbation=p) for p in PERTURBATIONS),
    *(MinSum(perturbation=p) for p in PERTURBATIONS),
)
DATA_ATTACKS: tuple[DataAttack, ...] = (LabelFlipping(rate=0.5), LabelFlip(), Backdoor())
NEEDS_HONEST = {"sybil_nodes", "empire", "little", "mimic", "min_max", "min_sum"}
NEEDS_OWN = {"model_poisoning", "gaussian_noise", "sign_flip"}


def _id(attack: object) -> str:
    return attack.describe() if hasattr(attack, "describe") else str(attack)


def rows(h: int, d: int, seed: int = 0, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy((shift + scale * rng.standard_normal((h, d))).astype(np.float32))


def make_ctx(
    honest: torch.Tensor,
    own: torch.Tensor | None = None,
    f: int | None = None,
    seed: int = 0,
    num_participants: int = -1,
) -> AttackContext:
    if f is None:
        f = own.shape[0] if own is not None else 2
    return AttackContext(
        honest=honest,
        own=own,
        num_byzantine=f,
        generator=torch.Generator().manual_seed(seed),
        num_participants=num_participants,
    )


def f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)


def ref_mean(g: np.ndarray) -> np.ndarray:
    h = g.shape[0]
    return np.array([sum(g[i, j] for i in range(h)) / h for j in range(g.shape[1])])


def ref_std(g: np.ndarray) -> np.ndarray:
    """Coordinate-wise standard deviation with Bessel's correction, 0 for one row."""
    h = g.shape[0]
    if h < 2:
        return np.zeros(g.shape[1])
    mu = ref_mean(g)
    return np.array(
        [math.sqrt(sum((g[i, j] - mu[j]) ** 2 for i in range(h)) / (h - 1)) for j in range(len(mu))]
    )


def assert_rows_equal(out: torch.Tensor, row: np.ndarray, f: int) -> None:
    assert out.shape == (f, row.shape[0])
    assert out.dtype == torch.float32
    expected = np.broadcast_to(row.astype(np.float32), (f, row.shape[0]))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------- catalogue
def test_catalogue_has_fourteen_attacks_all_covered_here() -> None:
    assert len(ATTACKS) == 14
    covered = {a.name for a in UPDATE_ATTACKS} | {a.name for a in DATA_ATTACKS}
    assert covered == set(ATTACKS)
    for name, cls in ATTACKS.items():
        assert cls.name == name
        assert cls.kind == (
            "data" if name in {"label_flipping", "label_flip", "backdoor"} else "update"
        )
        assert issubclass(cls, DataAttack if cls.kind == "data" else UpdateAttack)


def test_needs_flags_match_the_formulas() -> None:
    assert {n for n, c in ATTACKS.items() if c.needs_honest} == NEEDS_HONEST
    assert {n for n, c in ATTACKS.items() if c.needs_own} == NEEDS_OWN


# --------------------------------------------------------------------------- shapes / dtypes
@pytest.mark.parametrize("attack", UPDATE_ATTACKS, ids=_id)
def test_update_attack_shape_and_dtype(attack: UpdateAttack) -> None:
    honest = rows(6, 5, seed=1)
    own = rows(3, 5, seed=2)
    out = attack.craft(make_ctx(honest, own))
    assert out.shape == (3, 5)
    assert out.dtype == torch.float32
    assert isinstance(attack.severity(), float)


@FEW
@given(
    h=st.integers(1, 6),
    extra=st.integers(0, 5),
    d=st.integers(1, 8),
    seed=st.integers(0, 2**31 - 1),
    double=st.booleans(),
    index=st.integers(0, len(UPDATE_ATTACKS) - 1),
)
def test_update_attack_shape_dtype_property(
    h: int, extra: int, d: int, seed: int, double: bool, index: int
) -> None:
    attack = UPDATE_ATTACKS[index]
    f = 1 + extra % h  # f <= h keeps Little's z_max defined
    honest = rows(h, d, seed=seed)
    own = rows(f, d, seed=seed + 1)
    if double:
        honest, own = honest.double(), own.double()
    out = attack.craft(make_ctx(honest, own, f=f, seed=seed))
    assert out.shape == (f, d)
    assert out.dtype == torch.float32
    if attack.name != "inf":
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("attack", [a for a in UPDATE_ATTACKS if a.needs_honest], ids=_id)
def test_needs_honest_attacks_refuse_zero_honest_rows(attack: UpdateAttack) -> None:
    honest = torch.zeros(0, 4)
    with pytest.raises(ValidationError, match=attack.name):
        attack.craft(make_ctx(honest, rows(2, 4)))


@pytest.mark.parametrize("attack", [a for a in UPDATE_ATTACKS if not a.needs_honest], ids=_id)
def test_other_update_attacks_work_without_honest_rows(attack: UpdateAttack) -> None:
    out = attack.craft(make_ctx(torch.zeros(0, 4), rows(2, 4)))
    assert out.shape == (2, 4)


@pytest.mark.parametrize("attack", [a for a in UPDATE_ATTACKS if a.needs_own], ids=_id)
def test_needs_own_attacks_refuse_missing_own(attack: UpdateAttack) -> None:
    with pytest.raises(ValidationError, match=attack.name):
        attack.craft(make_ctx(rows(4, 3), None, f=2))


def test_attack_context_validation() -> None:
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValidationError, match=r"\(h, d\)"):
        AttackContext(honest=torch.zeros(3), own=None, num_byzantine=1, generator=gen)
    with pytest.raises(ValidationError, match="num_byzantine"):
        AttackContext(honest=torch.zeros(3, 2), own=None, num_byzantine=0, generator=gen)
    with pytest.raises(ValidationError, match="own"):
        AttackContext(
            honest=torch.zeros(3, 2), own=torch.zeros(2, 3), num_byzantine=2, generator=gen
        )
    ctx = AttackContext(honest=torch.zeros(3, 2), own=None, num_byzantine=2, generator=gen)
    assert ctx.num_participants == 5
    assert ctx.dim == 2


# ------------------------------------------------------------------------------ the formulas
@pytest.mark.parametrize("boost", [0.5, 1.0, 3.5, 10.0])
def test_model_poisoning_is_minus_boost_times_own(boost: float) -> None:
    own = rows(3, 7, seed=4)
    attack = ModelPoisoning(boost=boost)
    out = attack.craft(make_ctx(rows(5, 7), own))
    np.testing.assert_allclose(f64(out), -boost * f64(own), rtol=1e-6)
    assert attack.severity() == boost
    assert ModelPoisoning.intensity_field == "boost"
    assert ModelPoisoning().boost == 10.0


@pytest.mark.parametrize("scale", [1.0, 2.5, -0.5, 0.0])
def test_sybil_nodes_is_minus_scale_times_honest_mean(scale: float) -> None:
    honest = rows(5, 6, seed=3, shift=0.7)
    attack = SybilNodes(count=4, scale=scale)
    out = attack.craft(make_ctx(honest, None, f=4))
    assert_rows_equal(out, -scale * ref_mean(f64(honest)), 4)
    assert attack.severity() == scale
    assert SybilNodes.intensity_field == "scale"


def test_gaussian_noise_is_own_plus_sigma_noise() -> None:
    sigma = 0.5
    d = 20_000
    own = rows(2, d, seed=5, shift=3.0)
    attack = GaussianNoise(sigma=sigma)
    out = attack.craft(make_ctx(torch.zeros(0, d), own, seed=11))
    again = attack.craft(make_ctx(torch.zeros(0, d), own, seed=11))
    other = attack.craft(make_ctx(torch.zeros(0, d), own, seed=12))
    assert torch.equal(out, again)
    assert not torch.equal(out, other)
    noise = f64(out) - f64(own)
    for row in noise:  # each row gets its own N(0, sigma^2) noise
        assert abs(row.mean()) < 0.02
        assert abs(row.std() - sigma) < 0.02 * sigma
    assert not np.allclose(noise[0], noise[1])
    assert abs(np.corrcoef(noise[0], noise[1])[0, 1]) < 0.05
    assert attack.severity() == sigma
    assert GaussianNoise.intensity_field == "sigma"


def test_gaussian_noise_with_zero_sigma_is_own() -> None:
    own = rows(3, 4, seed=6)
    out = GaussianNoise(sigma=0.0).craft(make_ctx(rows(2, 4), own))
    np.testing.assert_array_equal(out.numpy(), own.numpy())


@pytest.mark.parametrize("scale", [-1.0, -3.0, 2.0, 0.0])
def test_empire_is_scale_times_mean(scale: float) -> None:
    honest = rows(7, 5, seed=7, shift=-0.3)
    attack = Empire(scale=scale)
    out = attack.craft(make_ctx(honest, None, f=3))
    assert_rows_equal(out, scale * ref_mean(f64(honest)), 3)
    assert attack.severity() == abs(scale)
    assert Empire().scale == -1.0


def little_z(f: int, n: int) -> float:
    s = n // 2 + 1 - f
    return ppf((n - s) / n)


def test_little_z_max_reference_value() -> None:
    assert Little.z_max(10, 50) == pytest.approx(0.4677, abs=5e-5)
    assert Little.z_max(10, 50) == pytest.approx(little_z(10, 50), abs=1e-9)
    assert Little.z_max(1, 2) == pytest.approx(0.0, abs=1e-12)  # s = 1, (N - s)/N = 1/2


@pytest.mark.parametrize(("f", "n"), [(1, 3), (2, 5), (3, 10), (10, 50), (24, 50), (1, 100)])
def test_little_z_max_matches_normal_quantile(f: int, n: int) -> None:
    assert Little.z_max(f, n) == pytest.approx(little_z(f, n), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("h", "f"), [(7, 3), (10, 2), (4, 4), (1, 1), (2, 1)])
def test_little_is_mean_plus_z_std_with_round_f_and_n(h: int, f: int) -> None:
    honest = rows(h, 6, seed=h + f, scale=2.0, shift=1.0)
    attack = Little()
    ctx = make_ctx(honest, None, f=f)
    out = attack.craft(ctx)
    g = f64(honest)
    z = little_z(f, h + f)
    assert_rows_equal(out, ref_mean(g) + z * ref_std(g), f)
    assert attack.severity_for(ctx) == pytest.approx(z, rel=1e-9, abs=1e-12)


def test_little_uses_bessel_corrected_std() -> None:
    honest = torch.tensor([[0.0, 1.0], [2.0, 1.0]])  # std (ddof=1) = [sqrt(2), 0]
    ctx = make_ctx(honest, None, f=1)
    z = little_z(1, 3)
    out = Little().craft(ctx)
    np.testing.assert_allclose(f64(out)[0], [1.0 + z * math.sqrt(2.0), 1.0], rtol=1e-6)


def test_little_overrides_f_and_n() -> None:
    honest = rows(6, 4, seed=9)
    g = f64(honest)
    ctx = make_ctx(honest, None, f=2)
    out = Little(f=5, N=20).craft(ctx)
    assert_rows_equal(out, ref_mean(g) + little_z(5, 20) * ref_std(g), 2)
    # only f: N from the round; only N: f from the round
    out = Little(f=3).craft(ctx)
    assert_rows_equal(out, ref_mean(g) + little_z(3, 8) * ref_std(g), 2)
    out = Little(N=30).craft(ctx)
    assert_rows_equal(out, ref_mean(g) + little_z(2, 30) * ref_std(g), 2)
    # the context's num_participants is N by default
    ctx40 = make_ctx(honest, None, f=2, num_participants=40)
    out = Little().craft(ctx40)
    assert_rows_equal(out, ref_mean(g) + little_z(2, 40) * ref_std(g), 2)
    assert Little().severity_for(ctx40) == pytest.approx(little_z(2, 40))


@pytest.mark.parametrize(("f", "n"), [(26, 50), (2, 2), (3, 4), (5, 4), (30, 50)])
def test_little_invalid_f_n_raise(f: int, n: int) -> None:
    with pytest.raises(ValidationError, match="little"):
        Little.z_max(f, n)
    with pytest.raises(ValidationError, match="little"):
        Little(f=f, N=n).craft(make_ctx(rows(4, 3), None, f=1))


def test_little_invalid_round_raises() -> None:
    # f = 5 adversaries among N = 6: s = 6//2 + 1 - 5 < 1
    with pytest.raises(ValidationError, match="little"):
        Little().craft(make_ctx(rows(1, 3), None, f=5))


@pytest.mark.parametrize("scale", [-1.0, -1.5, 2.0, 0.0])
def test_sign_flip_is_scale_times_own(scale: float) -> None:
    own = rows(4, 5, seed=8)
    attack = SignFlip(scale=scale)
    out = attack.craft(make_ctx(rows(2, 5), own))
    np.testing.assert_allclose(f64(out), scale * f64(own), rtol=1e-6)
    assert attack.severity() == abs(scale)
    assert SignFlip().scale == -1.0


def test_gaussian_mean_std_and_independent_rows() -> None:
    mu, sigma, d = 2.0, 0.5, 20_000
    attack = Gaussian(mu=mu, sigma=sigma)
    out = attack.craft(make_ctx(rows(3, d), None, f=3, seed=21))
    x = f64(out)
    assert x.shape == (3, d)
    for row in x:
        assert abs(row.mean() - mu) < 0.02
        assert abs(row.std() - sigma) < 0.02 * sigma
    corr = np.corrcoef(x)
    assert np.all(np.abs(corr[np.triu_indices(3, 1)]) < 0.05)
    assert torch.equal(out, attack.craft(make_ctx(rows(3, d), None, f=3, seed=21)))
    assert not torch.equal(out, attack.craft(make_ctx(rows(3, d), None, f=3, seed=22)))
    assert attack.severity() == sigma


def test_gaussian_does_not_read_honest_rows() -> None:
    attack = Gaussian()
    a = attack.craft(make_ctx(rows(3, 10, seed=1), None, f=2, seed=5))
    b = attack.craft(make_ctx(rows(3, 10, seed=2) * 100, None, f=2, seed=5))
    assert torch.equal(a, b)


def test_inf_is_all_plus_inf() -> None:
    attack = Inf()
    out = attack.craft(make_ctx(rows(3, 6), None, f=4))
    assert out.shape == (4, 6)
    assert out.dtype == torch.float32
    assert torch.isposinf(out).all()
    assert attack.severity() == math.inf


@pytest.mark.parametrize("epsilon", [0, 2, 4])
def test_mimic_copies_honest_row(epsilon: int) -> None:
    honest = rows(5, 6, seed=10)
    out = Mimic(epsilon=epsilon).craft(make_ctx(honest, None, f=3))
    assert_rows_equal(out, f64(honest)[epsilon], 3)
    assert torch.equal(out[0], honest[epsilon])


@pytest.mark.parametrize("epsilon", [5, 6, 100])
def test_mimic_bad_epsilon_raises(epsilon: int) -> None:
    with pytest.raises(ValidationError, match="epsilon"):
        Mimic(epsilon=epsilon).craft(make_ctx(rows(5, 6), None, f=1))


# ------------------------------------------------------------------------- min-max / min-sum
def ref_direction(kind: str, g: np.ndarray) -> np.ndarray:
    mu = ref_mean(g)
    if kind == "unit_vec":
        return -mu / math.sqrt(float(np.sum(mu * mu)))
    if kind == "std":
        return -ref_std(g)
    return -np.sign(mu)


def sq(v: np.ndarray) -> float:
    return float(np.sum(v * v))


def minmax_sides(g: np.ndarray, u: np.ndarray) -> tuple[float, float]:
    """Squared: max_i ||u - g_i||^2 and max_ij ||g_i - g_j||^2 (brute force)."""
    h = g.shape[0]
    lhs = max(sq(u - g[i]) for i in range(h))
    rhs = max(sq(g[i] - g[j]) for i in range(h) for j in range(h))
    return lhs, rhs


def minsum_sides(g: np.ndarray, u: np.ndarray) -> tuple[float, float]:
    """sum_i ||u - g_i||^2 and max_i sum_j ||g_i - g_j||^2 (brute force)."""
    h = g.shape[0]
    lhs = sum(sq(u - g[i]) for i in range(h))
    rhs = max(sum(sq(g[i] - g[j]) for j in range(h)) for i in range(h))
    return lhs, rhs


SIDES = {"min_max": minmax_sides, "min_sum": minsum_sides}


def holds(name: str, g: np.ndarray, p: np.ndarray, gamma: float) -> bool:
    lhs, rhs = SIDES[name](g, ref_mean(g) + gamma * p)
    return lhs <= rhs * (1 + 1e-9) + 1e-12


def bisect_gamma(name: str, g: np.ndarray, p: np.ndarray) -> float:
    """Largest feasible gamma >= 0 by doubling then bisection (the feasible set is [0, γ*])."""
    assert holds(name, g, p, 0.0)
    hi = 1.0
    while holds(name, g, p, hi):
        hi *= 2.0
        assert hi < 2.0**80
    lo = 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if holds(name, g, p, mid):
            lo = mid
        else:
            hi = mid
    return lo


def check_agnostic(attack: MinMax | MinSum, honest: torch.Tensor, f: int = 2) -> float:
    g = f64(honest)
    p = ref_direction(attack.perturbation, g)
    gamma = attack.gamma(honest)
    assert math.isfinite(gamma)
    assert gamma >= 0.0
    assert holds(attack.name, g, p, gamma)
    assert not holds(attack.name, g, p, gamma * (1 + 1e-6) + 1e-9)
    ctx = make_ctx(honest, None, f=f)
    out = attack.craft(ctx)
    assert_rows_equal(out, ref_mean(g) + gamma * p, f)
    assert attack.severity_for(ctx) == gamma
    return gamma


@pytest.mark.parametrize("cls", [MinMax, MinSum])
@pytest.mark.parametrize("perturbation", PERTURBATIONS)
@pytest.mark.parametrize(("h", "d", "seed"), [(2, 3, 0), (5, 4, 1), (9, 10, 2), (30, 6, 3)])
def test_agnostic_gamma_is_largest_feasible(
    cls: type, perturbation: str, h: int, d: int, seed: int
) -> None:
    honest = rows(h, d, seed=seed, scale=1.5, shift=0.4)
    attack = cls(perturbation=perturbation)
    gamma = check_agnostic(attack, honest, f=3)
    reference = bisect_gamma(attack.name, f64(honest), ref_direction(perturbation, f64(honest)))
    assert gamma == pytest.approx(reference, rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("cls", [MinMax, MinSum])
def test_agnostic_default_perturbation_is_std(cls: type) -> None:
    assert cls().perturbation == "std"


@pytest.mark.parametrize("cls", [MinMax, MinSum])
@pytest.mark.parametrize("perturbation", PERTURBATIONS)
def test_agnostic_single_honest_row_gives_that_row(cls: type, perturbation: str) -> None:
    honest = rows(1, 5, seed=3, shift=1.0)
    out = cls(perturbation=perturbation).craft(make_ctx(honest, None, f=2))
    assert_rows_equal(out, f64(honest)[0], 2)


@pytest.mark.parametrize("cls", [MinMax, MinSum])
def test_agnostic_hand_computed_example(cls: type) -> None:
    # g = (1, 0), (3, 0): μ = (2, 0), p = -sign μ = (-1, 0).
    honest = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    attack = cls(perturbation="sign")
    # min-max: |1 + γ| <= 2 and |1 - γ| <= 2  ->  γ = 1
    # min-sum: (1 + γ)^2 + (1 - γ)^2 <= 4     ->  γ = 1
    assert attack.gamma(honest) == pytest.approx(1.0, rel=1e-12)
    out = attack.craft(make_ctx(honest, None, f=1))
    np.testing.assert_allclose(out.numpy(), [[1.0, 0.0]], atol=1e-6)


@FEW
@given(
    data=st.lists(st.integers(-40, 40), min_size=2, max_size=40),
    d=st.integers(1, 5),
    perturbation=st.sampled_from(PERTURBATIONS),
    minmax=st.booleans(),
)
def test_agnostic_constraint_property(
    data: list[int], d: int, perturbation: str, minmax: bool
) -> None:
    h = len(data) // d
    assume(h >= 2)
    g = np.array(data[: h * d], dtype=np.float64).reshape(h, d) / 4.0
    assume(np.any(g != g[0]))  # some spread
    assume(np.any(ref_mean(g) != 0.0))  # a non-zero direction (p = 0 is tested below)
    honest = torch.from_numpy(g.astype(np.float32))
    attack = MinMax(perturbation=perturbation) if minmax else MinSum(perturbation=perturbation)
    check_agnostic(attack, honest, f=1)


@pytest.mark.parametrize("cls", [MinMax, MinSum])
@pytest.mark.parametrize("perturbation", ["unit_vec", "sign"])
def test_agnostic_zero_mean_gives_finite_row(cls: type, perturbation: str) -> None:
    honest = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])  # μ = 0, spread > 0
    attack = cls(perturbation=perturbation)
    out = attack.craft(make_ctx(honest, None, f=2))
    assert torch.isfinite(out).all()
    np.testing.assert_allclose(out.numpy(), np.zeros((2, 2)), atol=1e-6)
    assert math.isfinite(attack.gamma(honest))


@pytest.mark.parametrize("cls", [MinMax, MinSum])
def test_agnostic_many_identical_honest_rows_give_that_row(cls: type) -> None:
    row = rows(1, 100, seed=0, scale=3.7)
    honest = row.repeat(26, 1)
    out = cls().craft(make_ctx(honest, None, f=2))
    assert torch.isfinite(out).all()
    np.testing.assert_allclose(out.numpy(), row.repeat(2, 1).numpy(), rtol=1e-6)


@pytest.mark.parametrize("cls", [MinMax, MinSum])
@pytest.mark.parametrize("perturbation", PERTURBATIONS)
def test_agnostic_few_identical_honest_rows_give_that_row(cls: type, perturbation: str) -> None:
    row = rows(1, 4, seed=1, shift=2.0)
    honest = row.repeat(5, 1)
    out = cls(perturbation=perturbation).craft(make_ctx(honest, None, f=2))
    np.testing.assert_allclose(out.numpy(), row.repeat(2, 1).numpy(), rtol=1e-6)


# ------------------------------------------------------------------------------ data attacks
def client_data(n_per_class: int = 6, classes: int = 10, seed: int = 0):
    y = torch.arange(classes).repeat(n_per_class)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(y.shape[0], 1, 8, 8, generator=g)
    return x, y


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("rate", [0.1, 0.25, 0.3, 0.5, 0.99, 1.0])
def test_label_flipping_flips_round_rate_n_labels(rate: float) -> None:
    x, y = client_data()  # y = arange(10).repeat(6): n = 60, C = 10 (no fixed point C-1-y = y)
    x0, y0 = x.clone(), y.clone()
    attack = LabelFlipping(rate=rate)
    x2, y2 = attack.poison(x, y, num_classes=10, generator=gen(3))
    assert torch.equal(x, x0)
    assert torch.equal(y, y0)
    assert torch.equal(x2, x0)
    assert y2.shape == y.shape
    assert y2.dtype == y.dtype
    changed = (y2 != y0).numpy()
    assert changed.sum() == round(rate * 60)
    yn, y2n = y0.numpy(), y2.numpy()
    np.testing.assert_array_equal(y2n[changed], 9 - yn[changed])
    np.testing.assert_array_equal(y2n[~changed], yn[~changed])
    assert attack.severity() == rate
    assert attack.update_scale() == 1.0


def test_label_flipping_is_deterministic_per_generator_seed() -> None:
    x, y = client_data()
    attack = LabelFlipping(rate=0.3)
    a = attack.poison(x, y, num_classes=10, generator=gen(1))[1]
    b = attack.poison(x, y, num_classes=10, generator=gen(1))[1]
    c = attack.poison(x, y, num_classes=10, generator=gen(2))[1]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert LabelFlipping.intensity_field == "rate"


@pytest.mark.parametrize(("n", "rate"), [(1, 1.0), (7, 0.5), (13, 0.2), (0, 0.5)])
def test_label_flipping_small_clients(n: int, rate: float) -> None:
    y = torch.arange(n) % 4
    x = torch.randn(n, 3)
    _, y2 = LabelFlipping(rate=rate).poison(x, y, num_classes=4, generator=gen(0))
    assert int((y2 != y).sum()) == round(rate * n)


def test_label_flip_flips_every_label() -> None:
    x, y = client_data(n_per_class=3)
    x0, y0 = x.clone(), y.clone()
    attack = LabelFlip(scale=-2.5)
    x2, y2 = attack.poison(x, y, num_classes=10, generator=gen(0))
    assert torch.equal(x2, x0)
    assert torch.equal(x, x0)
    assert torch.equal(y, y0)
    np.testing.assert_array_equal(y2.numpy(), 9 - y0.numpy())
    assert attack.update_scale() == -2.5
    assert attack.severity() == 2.5
    assert LabelFlip().update_scale() == 1.0
    _, y3 = LabelFlip().poison(
        torch.zeros(3, 1), torch.tensor([0, 1, 2]), num_classes=3, generator=gen(0)
    )
    assert y3.tolist() == [2, 1, 0]


@pytest.mark.parametrize("attack", [LabelFlipping(rate=1.0), LabelFlip()], ids=_id)
def test_label_attacks_refuse_bad_labels_and_classes(attack: DataAttack) -> None:
    x = torch.zeros(4, 2)
    with pytest.raises(ValidationError, match=r"\[0, 2\]"):
        attack.poison(x, torch.tensor([0, 1, 2, 3]), num_classes=3, generator=gen(0))
    with pytest.raises(ValidationError):
        attack.poison(x, torch.tensor([0, -1, 2, 1]), num_classes=3, generator=gen(0))
    for bad in (1, 0, True, 2.0):
        with pytest.raises(ConfigurationError, match="num_classes"):
            attack.poison(x, torch.tensor([0, 1, 0, 1]), num_classes=bad, generator=gen(0))
    with pytest.raises(ValidationError, match="labels"):
        attack.poison(x, torch.tensor([0, 1, 0]), num_classes=3, generator=gen(0))
    with pytest.raises(ValidationError, match="labels"):
        attack.poison(x, torch.zeros(4, 1, dtype=torch.long), num_classes=3, generator=gen(0))


def ref_trigger(x: np.ndarray, k: int, value: float) -> np.ndarray:
    out = x.copy()
    hh, ww = x.shape[-2], x.shape[-1]
    for r in range(hh):
        for c in range(ww):
            if r >= hh - k and c >= ww - k:
                out[..., r, c] = value
    return out


@pytest.mark.parametrize("shape", [(3, 6, 5), (2, 3, 7, 7), (1, 4, 4), (2, 1, 9, 4)])
@pytest.mark.parametrize("value", [None, 5.0, -1.0])
@pytest.mark.parametrize("k", [1, 3, 4])
def test_backdoor_apply_trigger(shape: tuple[int, ...], value: float | None, k: int) -> None:
    x = torch.rand(shape, generator=gen(sum(shape)))
    x0 = x.clone()
    attack = Backdoor(trigger_size=k, trigger_value=value)
    out = attack.apply_trigger(x)
    assert torch.equal(x, x0)
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    expected = ref_trigger(x0.numpy(), k, float(x0.max()) if value is None else value)
    np.testing.assert_array_equal(out.numpy(), expected)


def test_backdoor_trigger_is_bottom_right() -> None:
    x = torch.zeros(1, 4, 5)
    out = Backdoor(trigger_size=2, trigger_value=1.0).apply_trigger(x)
    assert out[0].tolist() == [
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 1, 1],
        [0, 0, 0, 1, 1],
    ]


def test_backdoor_apply_trigger_errors() -> None:
    with pytest.raises(ValidationError, match="trigger_size=5"):
        Backdoor(trigger_size=5).apply_trigger(torch.zeros(2, 4, 6))
    with pytest.raises(ValidationError, match="trigger_size=7"):
        Backdoor(trigger_size=7).apply_trigger(torch.zeros(2, 3, 8, 6))
    for flat in (torch.zeros(4, 16), torch.zeros(16), torch.zeros(1, 1, 1, 4, 4)):
        with pytest.raises(ValidationError, match=r"\(n, H, W\)"):
            Backdoor(trigger_size=1).apply_trigger(flat)
    # the whole image is a valid trigger
    out = Backdoor(trigger_size=4, trigger_value=2.0).apply_trigger(torch.zeros(1, 4, 4))
    assert torch.all(out == 2.0)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("channels", [False, True])
def test_backdoor_poison(fraction: float, channels: bool) -> None:
    x, y = client_data(n_per_class=4)  # n = 40, values in [0, 1)
    if not channels:
        x = x[:, 0]
    x0, y0 = x.clone(), y.clone()
    attack = Backdoor(
        target=3, poison_fraction=fraction, trigger_size=2, trigger_value=5.0, boost=4.0
    )
    x2, y2 = attack.poison(x, y, num_classes=10, generator=gen(7))
    assert torch.equal(x, x0)
    assert torch.equal(y, y0)
    flat0 = x0.reshape(40, -1).numpy()
    flat2 = x2.reshape(40, -1).numpy()
    stamped = np.any(flat2 != flat0, axis=1)
    assert stamped.sum() == round(fraction * 40)
    triggered = ref_trigger(x0.numpy(), 2, 5.0)
    np.testing.assert_array_equal(x2.numpy()[stamped], triggered[stamped])
    np.testing.assert_array_equal(x2.numpy()[~stamped], x0.numpy()[~stamped])
    assert np.all(y2.numpy()[stamped] == 3)
    np.testing.assert_array_equal(y2.numpy()[~stamped], y0.numpy()[~stamped])
    assert attack.update_scale() == 4.0
    assert attack.severity() == fraction
    # deterministic per generator seed
    again = attack.poison(x, y, num_classes=10, generator=gen(7))
    assert torch.equal(again[0], x2)
    assert torch.equal(again[1], y2)
    if fraction < 1.0:
        other = attack.poison(x, y, num_classes=10, generator=gen(8))
        assert not torch.equal(other[0], x2)


def test_backdoor_poison_default_value_is_an_image_maximum() -> None:
    # every image has the same maximum, so "the image's maximum" is unambiguous here
    x = torch.rand(20, 6, 6, generator=gen(0)) * 0.5
    x[:, 0, 0] = 0.75
    y = torch.zeros(20, dtype=torch.long)
    x2, _ = Backdoor(target=1, poison_fraction=0.5, trigger_size=2).poison(
        x, y, num_classes=2, generator=gen(0)
    )
    stamped = np.any((x2 != x).reshape(20, -1).numpy(), axis=1)
    assert stamped.sum() == 10
    assert torch.all(x2[torch.from_numpy(stamped)][:, 4:, 4:] == 0.75)


def test_backdoor_poison_errors() -> None:
    x, y = client_data(n_per_class=2)
    with pytest.raises(ValidationError, match="target=10"):
        Backdoor(target=10).poison(x, y, num_classes=10, generator=gen(0))
    with pytest.raises(ValidationError, match="trigger_size=9"):
        Backdoor(trigger_size=9).poison(x, y, num_classes=10, generator=gen(0))
    with pytest.raises(ValidationError, match=r"\(n, H, W\)"):
        Backdoor().poison(x.reshape(20, -1), y, num_classes=10, generator=gen(0))
    with pytest.raises(ValidationError):
        Backdoor().poison(x, y[:5], num_classes=10, generator=gen(0))


# --------------------------------------------------------------------- constructor validation
BAD_PARAMETERS = [
    (ModelPoisoning, {"boost": 0}),
    (ModelPoisoning, {"boost": -1.0}),
    (ModelPoisoning, {"boost": math.inf}),
    (ModelPoisoning, {"boost": "10"}),
    (ModelPoisoning, {"boost": True}),
    (SybilNodes, {"count": 0}),
    (SybilNodes, {"count": 1.5}),
    (SybilNodes, {"count": True}),
    (SybilNodes, {"scale": math.nan}),
    (GaussianNoise, {"sigma": -0.1}),
    (GaussianNoise, {"sigma": math.inf}),
    (LabelFlipping, {"rate": 1.5}),
    (LabelFlipping, {"rate": 0}),
    (LabelFlipping, {"rate": -0.2}),
    (Empire, {"scale": -math.inf}),
    (Empire, {"scale": None}),
    (Little, {"f": 0}),
    (Little, {"f": 1.0}),
    (Little, {"N": 1}),
    (Little, {"N": "10"}),
    (SignFlip, {"scale": math.nan}),
    (Gaussian, {"sigma": -1.0}),
    (Gaussian, {"mu": math.inf}),
    (Mimic, {"epsilon": -1}),
    (Mimic, {"epsilon": 0.5}),
    (LabelFlip, {"scale": "a"}),
    (Backdoor, {"target": -1}),
    (Backdoor, {"target": 1.0}),
    (Backdoor, {"poison_fraction": 0}),
    (Backdoor, {"poison_fraction": 1.1}),
    (Backdoor, {"trigger_size": 0}),
    (Backdoor, {"trigger_value": math.inf}),
    (Backdoor, {"boost": 0.0}),
    (MinMax, {"perturbation": "x"}),
    (MinMax, {"perturbation": None}),
    (MinSum, {"perturbation": "STD"}),
]


@pytest.mark.parametrize(
    ("cls", "kwargs"), BAD_PARAMETERS, ids=[f"{c.__name__}-{k}" for c, k in BAD_PARAMETERS]
)
def test_bad_parameter_raises_configuration_error_naming_field(cls: type, kwargs: dict) -> None:
    (field,) = kwargs
    with pytest.raises(ConfigurationError) as info:
        cls(**kwargs)
    message = str(info.value)
    assert f"{cls.__name__}.{field}" in message
    assert repr(kwargs[field]) in message


def test_every_attack_constructs_with_defaults_and_coerces_ints() -> None:
    for cls in ATTACKS.values():
        assert cls() == cls()
    assert ModelPoisoning(boost=2).boost == 2.0
    assert isinstance(ModelPoisoning(boost=2).boost, float)
    assert ModelPoisoning(boost=2) == ModelPoisoning(boost=2.0)
    assert Backdoor(trigger_value=1).trigger_value == 1.0
    assert Little(f=2, N=np.int64(10)).N == 10
    with pytest.raises(AttributeError):
        ModelPoisoning().boost = 1.0  # type: ignore[misc]


def test_little_with_a_fixed_factor_is_byzfl_alie() -> None:
    """``Little(z=tau)`` is ByzFL's ALIE: mean + tau * std of the honest vectors."""
    gen = torch.Generator().manual_seed(11)
    honest = torch.randn(7, 13, generator=gen)
    ctx = AttackContext(honest, None, 3, torch.Generator().manual_seed(0))
    g = honest.double().numpy()
    expected = g.mean(axis=0) + 1.5 * g.std(axis=0, ddof=1)
    out = Little(z=1.5).craft(ctx)
    np.testing.assert_allclose(out.numpy(), np.tile(expected, (3, 1)), rtol=1e-5, atol=1e-6)
    assert Little(z=1.5).severity_for(ctx) == 1.5
    assert Little().severity_for(ctx) == pytest.approx(Little.z_max(3, 10))
