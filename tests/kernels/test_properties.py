"""Algebraic properties of the kernels, checked with hypothesis.

Coordinate-wise properties use hypothesis-drawn arrays directly (ties and repeated values
included). Properties of selection rules (Krum, MDA, ...) would be sensitive to how exact ties
are broken after a translation rounds the data, so for those hypothesis draws the sizes, the
seed and the parameters, and the rows themselves are continuous random draws.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from velocity import kernels as K

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def matrices(draw: st.DrawFn, n_min: int = 1, n_max: int = 12, d_max: int = 5) -> np.ndarray:
    n = draw(st.integers(n_min, n_max))
    d = draw(st.integers(1, d_max))
    return draw(hnp.arrays(np.float64, (n, d), elements=finite))


@st.composite
def continuous(draw: st.DrawFn, n_min: int = 3, n_max: int = 12, d_max: int = 6) -> torch.Tensor:
    """Tie-free float64 rows: sizes and seed from hypothesis, values from a normal draw."""
    n = draw(st.integers(n_min, n_max))
    d = draw(st.integers(1, d_max))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    rng = np.random.default_rng(seed)
    return torch.tensor(rng.standard_normal((n, d)) * scale + rng.normal(size=d) * scale)


def _close(a: torch.Tensor, b: torch.Tensor, scale: float, rtol: float = 1e-9) -> None:
    diff = float((a - b).abs().max())
    assert diff <= rtol * max(scale, 1e-300), f"{diff:.3e} > {rtol * scale:.3e}"


# ---------------------------------------------------------------- coordinate-wise bounds

Coord = Callable[[torch.Tensor, int], torch.Tensor]
COORDINATE_RULES: dict[str, tuple[Coord, Callable[[int], int]]] = {
    "median": (lambda x, f: K.median(x), lambda n: 0),
    "trimmed_mean": (lambda x, f: K.trimmed_mean(x, f=f), lambda n: (n - 1) // 2),
    "meamed": (lambda x, f: K.meamed(x, f=f), lambda n: (n - 1) // 2),
    "geometric_median": (lambda x, f: K.geometric_median(x), lambda n: 0),
}


@pytest.mark.parametrize("name", sorted(COORDINATE_RULES))
@SETTINGS
@given(a=matrices(), data=st.data())
def test_within_coordinatewise_range(name: str, a: np.ndarray, data: st.DataObject) -> None:
    rule, fmax = COORDINATE_RULES[name]
    f = data.draw(st.integers(0, fmax(a.shape[0])), label="f")
    x = torch.tensor(a)
    out = rule(x, f)
    lo, hi = x.min(dim=0).values, x.max(dim=0).values
    # geometric median: rounding of a convex combination — relative, plus one subnormal ulp
    # per row (0.5 * 5e-324 rounds to 0: found by hypothesis on two rows of 5e-324)
    tiny = torch.finfo(x.dtype).smallest_normal * torch.finfo(x.dtype).eps
    slack = 1e-12 * (lo.abs() + hi.abs()) + x.shape[0] * tiny
    assert bool(((out >= lo - slack) & (out <= hi + slack)).all()), (out, lo, hi)


@SETTINGS
@given(a=matrices(n_min=3, n_max=15))
def test_bulyan_within_coordinatewise_range(a: np.ndarray) -> None:
    x = torch.tensor(a)
    f = (x.shape[0] - 3) // 4
    out = K.bulyan(x, f=f)
    assert bool(((out >= x.min(dim=0).values) & (out <= x.max(dim=0).values)).all())


@SETTINGS
@given(a=matrices(n_min=1))
def test_median_of_sorted_columns(a: np.ndarray) -> None:
    """Median ignores row order and equals the middle (pair mean) of each sorted column."""
    x = torch.tensor(a)
    s = np.sort(a, axis=0)
    n = a.shape[0]
    expected = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    np.testing.assert_allclose(K.median(x).numpy(), expected, rtol=1e-15, atol=0)


@SETTINGS
@given(
    a=matrices(n_min=1, n_max=12, d_max=4).filter(lambda m: m.shape[0] > 0),
    data=st.data(),
    pool=st.booleans(),
)
def test_meamed_keeps_the_values_closest_to_the_median(
    a: np.ndarray, data: st.DataObject, pool: bool
) -> None:
    """(n − f)·meamed equals the sum of the n − f values nearest the median, in every column.

    With ties at the cut-off between *different* values any of them may be kept, so the
    check is that the sum lies between the smallest and the largest admissible sums.
    """
    if pool:  # many repeated values, as from Sybil copies
        a = a[:, :1][np.arange(a.shape[0]) % max(1, a.shape[0] // 3)].repeat(a.shape[1], axis=1)
        a = a + np.arange(a.shape[1])  # distinct columns
    n = a.shape[0]
    f = data.draw(st.integers(0, (n - 1) // 2), label="f")
    keep = n - f
    out = K.meamed(torch.tensor(a), f=f).numpy() * keep
    for j in range(a.shape[1]):
        col = np.sort(a[:, j])
        med = col[n // 2] if n % 2 else (col[n // 2 - 1] + col[n // 2]) / 2
        dist = np.abs(col - med)
        cut = np.sort(dist)[keep - 1]
        inside = col[dist < cut]
        tied = np.sort(col[dist == cut])
        r = keep - len(inside)
        lo, hi = inside.sum() + tied[:r].sum(), inside.sum() + tied[len(tied) - r :].sum()
        slack = 1e-9 * (np.abs(col).max() * n + 1e-300)
        assert lo - slack <= out[j] <= hi + slack, (j, col, f, out[j] / keep, lo / keep, hi / keep)


# ---------------------------------------------------------------- equivariance

Rule = Callable[[torch.Tensor], torch.Tensor]


def _translation_rules(n: int) -> dict[str, tuple[Rule, float]]:
    """Translation-equivariant rules valid for n rows, with a relative tolerance each."""
    f2 = max(0, (n - 1) // 2)
    fk = max(0, (n - 3) // 2)
    rules: dict[str, tuple[Rule, float]] = {
        "mean": (K.mean, 1e-9),
        "median": (K.median, 1e-9),
        "trimmed_mean": (lambda x: K.trimmed_mean(x, f=f2), 1e-9),
        "meamed": (lambda x: K.meamed(x, f=f2), 1e-9),
        "geometric_median": (lambda x: K.geometric_median(x, tol=1e-12, max_iter=2000), 1e-6),
        "centered_clipping": (lambda x: K.centered_clipping(x, c_tau=1.0, init="median"), 1e-8),
        "monna": (lambda x: K.monna(x, f=f2), 1e-9),
        "caf": (lambda x: K.caf(x, f=f2), 1e-7),
        "nnm": (lambda x: K.nnm(x, f=f2)[0], 1e-9),
    }
    if n >= 3:
        rules["krum"] = (lambda x: K.krum(x, f=fk), 1e-9)
        rules["multi_krum"] = (lambda x: K.multi_krum(x, f=fk), 1e-9)
        rules["bulyan"] = (lambda x: K.bulyan(x, f=(n - 3) // 4), 1e-9)
    if n <= 10:
        rules["mda"] = (lambda x: K.mda(x, f=f2), 1e-9)
        rules["smea"] = (lambda x: K.smea(x, f=f2), 1e-9)
    return rules


@SETTINGS
@given(x=continuous(), shift_scale=st.sampled_from([0.1, 10.0, 1e3]), seed=st.integers(0, 99))
def test_translation_equivariance(x: torch.Tensor, shift_scale: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(x.shape[1], generator=g, dtype=torch.float64) * shift_scale * x.abs().max()
    scale = float(x.abs().max() + c.abs().max())
    failures = []
    for name, (rule, rtol) in _translation_rules(x.shape[0]).items():
        diff = float((rule(x + c) - (rule(x) + c)).abs().max())
        if not diff <= rtol * scale:
            failures.append(f"{name}: {diff:.3e} > {rtol * scale:.3e}")
    assert not failures, failures


@SETTINGS
@given(x=continuous(), a=st.sampled_from([-1e3, -2.0, -1.0, 0.5, 3.0, 1e4]))
def test_scaling_equivariance(x: torch.Tensor, a: float) -> None:
    """rule(a·X) = a·rule(X); thresholds (c_tau, clip) scale with |a|."""
    n = x.shape[0]
    f2 = (n - 1) // 2
    rules: dict[str, tuple[Callable[[torch.Tensor, float], Any], float]] = {
        name: ((lambda y, s, r=rule: r(y)), rtol)
        for name, (rule, rtol) in _translation_rules(n).items()
        if name != "centered_clipping"
    }
    rules["centered_clipping"] = (
        lambda y, s: K.centered_clipping(y, c_tau=abs(s), init="median"),
        1e-8,
    )
    rules["cge"] = (lambda y, s: K.cge(y, f=n - 1), 1e-9)
    rules["arc"] = (lambda y, s: K.arc(y, f=f2)[0], 1e-9)
    rules["clip"] = (lambda y, s: K.clip(y, threshold=abs(s))[0], 1e-9)
    scale = float(x.abs().max()) * abs(a)
    failures = []
    for name, (rule, rtol) in rules.items():
        diff = float((rule(a * x, a) - a * rule(x, 1.0)).abs().max())
        if not diff <= rtol * scale:
            failures.append(f"{name}: {diff:.3e} > {rtol * scale:.3e}")
    assert not failures, failures


# ---------------------------------------------------------------- mean and weights


@SETTINGS
@given(a=matrices(), w=st.floats(1e-3, 1e3), data=st.data())
def test_mean_weights(a: np.ndarray, w: float, data: st.DataObject) -> None:
    x = torch.tensor(a)
    n = x.shape[0]
    plain = K.mean(x)
    scale = float(x.abs().max()) + 1e-300
    _close(K.mean(x, weights=torch.full((n,), w, dtype=torch.float64)), plain, scale, 1e-12)
    counts = data.draw(st.lists(st.integers(1, 4), min_size=n, max_size=n), label="counts")
    replicated = torch.repeat_interleave(x, torch.tensor(counts), dim=0)
    weighted = K.mean(x, weights=torch.tensor(counts, dtype=torch.float64))
    _close(weighted, K.mean(replicated), scale, 1e-12)
    # rescaling the weights changes nothing
    _close(K.mean(x, weights=w * torch.tensor(counts, dtype=torch.float64)), weighted, scale, 1e-12)


@SETTINGS
@given(x=continuous(n_min=1))
def test_f_zero_rules_are_the_mean(x: torch.Tensor) -> None:
    mean = K.mean(x)
    scale = float(x.abs().max())
    candidates: dict[str, torch.Tensor] = {
        "cge": K.cge(x, f=0),
        "trimmed_mean": K.trimmed_mean(x, f=0),
        "meamed": K.meamed(x, f=0),
        "monna": K.monna(x, f=0),
        "caf": K.caf(x, f=0),
        "mda": K.mda(x, f=0),
        "smea": K.smea(x, f=0),
        "nnm": K.nnm(x, f=0)[0],
        "bucketing": K.bucketing(x, bucket_size=x.shape[0] + 3)[0],
        "centered_clipping": K.centered_clipping(x, c_tau=1e30, M=1, init="zero"),
    }
    if x.shape[0] >= 3:
        candidates["multi_krum"] = K.multi_krum(x, f=0)
    for name, got in candidates.items():
        target = mean.expand_as(got) if got.ndim == 2 else mean
        assert got.shape[-1] == x.shape[1]
        _close(got, target, scale, 1e-12 if name != "caf" else 1e-10)


# ---------------------------------------------------------------- Krum


@SETTINGS
@given(x=continuous(n_min=3, n_max=15), data=st.data())
def test_krum_returns_an_input_row_and_multi_krum_m1_is_krum(
    x: torch.Tensor, data: st.DataObject
) -> None:
    n = x.shape[0]
    f = data.draw(st.integers(0, (n - 3) // 2), label="f")
    neighbors = data.draw(st.sampled_from(["n-f-2", "n-f-1"]), label="neighbors")
    out = K.krum(x, f=f, neighbors=neighbors)
    assert any(torch.equal(out, row) for row in x)
    torch.testing.assert_close(K.multi_krum(x, f=f, m=1, neighbors=neighbors), out)


@SETTINGS
@given(x=continuous(n_min=3, n_max=15), data=st.data())
def test_multi_krum_is_a_mean_of_m_rows(x: torch.Tensor, data: st.DataObject) -> None:
    """The output is the mean of the m rows of smallest Krum score (scores from krum_scores)."""
    n = x.shape[0]
    f = data.draw(st.integers(0, (n - 3) // 2), label="f")
    m = data.draw(st.integers(1, n), label="m")
    scores = K.krum_scores(K.pairwise_sq_distances(x), f)
    chosen = torch.argsort(scores)[:m]
    _close(K.multi_krum(x, f=f, m=m), x[chosen].mean(dim=0), float(x.abs().max()))


# ---------------------------------------------------------------- pre-aggregators


@SETTINGS
@given(a=matrices(), t=st.just(0.0) | st.floats(1e-100, 1e4))
def test_clip_bounds_norms_and_keeps_directions(a: np.ndarray, t: float) -> None:
    x = torch.tensor(a)
    out, _ = K.clip(x, threshold=t)
    in_norms = torch.linalg.vector_norm(x, dim=1)
    out_norms = torch.linalg.vector_norm(out, dim=1)
    assert bool((out_norms <= t * (1 + 1e-12)).all())
    small = in_norms <= t
    assert torch.equal(out[small], x[small])
    big = ~small & (in_norms > 0)
    if t > 0 and bool(big.any()):
        # normalise each side first: the product of two tiny norms underflows to 0
        unit_out = out[big] / out_norms[big, None]
        unit_in = x[big] / in_norms[big, None]
        cos = (unit_out * unit_in).sum(dim=1)
        assert bool((cos > 1 - 1e-12).all())


@SETTINGS
@given(x=continuous(n_min=2, n_max=15), data=st.data())
def test_arc_clips_exactly_the_k_largest(x: torch.Tensor, data: st.DataObject) -> None:
    n = x.shape[0]
    f = data.draw(st.integers(0, n), label="f")
    k = (2 * f * (n - f)) // n
    out, _ = K.arc(x, f=f)
    norms = torch.linalg.vector_norm(x, dim=1)
    order = torch.argsort(norms)
    kept = order[: n - k]
    assert torch.equal(out[kept], x[kept])
    if k:
        limit = norms[order[n - k - 1]]  # k <= n/2 < n: a largest kept row always exists
        out_norms = torch.linalg.vector_norm(out[order[n - k :]], dim=1)
        torch.testing.assert_close(out_norms, limit.expand_as(out_norms))


@SETTINGS
@given(x=continuous(n_min=1))
def test_nnm_with_f_zero_replaces_every_row_by_the_mean(x: torch.Tensor) -> None:
    out, _ = K.nnm(x, f=0)
    _close(out, K.mean(x).expand_as(x), float(x.abs().max()), 1e-12)


@SETTINGS
@given(a=matrices(), seed=st.integers(0, 2**31 - 1))
def test_bucketing_size_one_is_a_permutation(a: np.ndarray, seed: int) -> None:
    x = torch.tensor(a)
    w = torch.arange(1, x.shape[0] + 1, dtype=torch.float64)
    out, out_w = K.bucketing(
        x, weights=w, bucket_size=1, generator=torch.Generator().manual_seed(seed)
    )
    assert out_w is not None
    perm = out_w.long() - 1  # weight i+1 identifies row i
    assert sorted(perm.tolist()) == list(range(x.shape[0]))
    assert torch.equal(out, x[perm])


# ---------------------------------------------------------------- distances, noise


@SETTINGS
@given(x=continuous(n_min=1, n_max=10))
def test_pairwise_sq_distances_is_a_distance_matrix(x: torch.Tensor) -> None:
    dist = K.pairwise_sq_distances(x)
    assert dist.dtype == torch.float64
    scale = float(dist.max()) + 1e-300
    assert float((dist - dist.T).abs().max()) <= 1e-12 * scale
    assert bool((dist.diagonal() == 0).all())
    assert bool((dist >= 0).all())
    # triangle inequality on the (unsquared) distances
    root = dist.sqrt()
    scale = float(root.max()) + 1e-300
    assert bool((root[:, None, :] <= root[:, :, None] + root.T[None, :, :] + 1e-9 * scale).all())


@SETTINGS
@given(d=st.integers(1, 50), std=st.floats(0.0, 10.0), seed=st.integers(0, 2**31 - 1))
def test_apply_gaussian_noise_is_pure(d: int, std: float, seed: int) -> None:
    v = torch.linspace(-1, 1, d, dtype=torch.float64)
    before = v.clone()
    state = torch.random.get_rng_state()
    a = K.apply_gaussian_noise(v, std, generator=torch.Generator().manual_seed(seed))
    b = K.apply_gaussian_noise(v, std, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(v, before)
    assert a is not v
    assert torch.equal(a, b)
    assert a.dtype == v.dtype
    assert a.shape == v.shape
    if std == 0.0:
        assert torch.equal(a, v)


def test_apply_gaussian_noise_has_the_requested_spread() -> None:
    v = torch.zeros(200_000)
    out = K.apply_gaussian_noise(v, 0.5, generator=torch.Generator().manual_seed(0))
    assert abs(float(out.mean())) < 0.01
    assert abs(float(out.std()) - 0.5) < 0.01


# ---------------------------------------------------------------- server optimizers

OPTIMIZERS = ["server_sgd", "fedavgm", "fedadagrad", "fedadam", "fedyogi"]


@pytest.mark.parametrize("name", OPTIMIZERS)
@SETTINGS
@given(d=st.integers(1, 20), rounds=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_server_optimizers_are_pure(name: str, d: int, rounds: int, seed: int) -> None:
    step = getattr(K, name)
    g = torch.Generator().manual_seed(seed)
    params = torch.randn(d, generator=g, dtype=torch.float64)
    state: dict[str, torch.Tensor] | None = None
    for _ in range(rounds):
        delta = torch.randn(d, generator=g, dtype=torch.float64)
        snapshot = (
            params.clone(),
            delta.clone(),
            None if state is None else {k: v.clone() for k, v in state.items()},
        )
        new_params, new_state = step(params, delta, state)
        assert torch.equal(params, snapshot[0])
        assert torch.equal(delta, snapshot[1])
        if state is not None:
            assert snapshot[2] is not None
            assert state.keys() == snapshot[2].keys()
            assert all(torch.equal(state[k], snapshot[2][k]) for k in state)
            assert new_state is not state
            assert all(new_state[k] is not state[k] for k in state if k in new_state)
        assert new_params is not params
        params, state = new_params, new_state
    frozen, _ = step(params, torch.randn(d, generator=g, dtype=torch.float64), state, lr=0.0)
    assert torch.equal(frozen, params)
