"""Every kernel against its brute-force float64 reference (``reference.py``).

Inputs are continuous random draws (no ties, so every selection is unique) with n in 3..25 and
d in 1..50, in float64 and float32; the reference always runs on the *same* values converted to
float64, so only the kernel's own rounding separates the two. Parameters sweep their valid
range, f from 0 to the largest value the rule accepts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import kernels_reference as ref
import numpy as np
import pytest
import torch

from velocity import kernels as K

# (dtype, relative tolerance against the largest |entry| of the input)
DTYPES = [
    pytest.param(torch.float64, 1e-9, id="f64"),
    pytest.param(torch.float32, 3e-6, id="f32"),
]
CASES = range(4)  # random (n, d) draws per rule and dtype


def _draw(
    seed: int, dtype: torch.dtype, *, n_lo: int = 3, n_hi: int = 25
) -> tuple[torch.Tensor, np.ndarray, np.random.Generator]:
    """A random ``(n, d)`` tensor of the dtype, its exact float64 copy, and the generator."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(n_lo, n_hi + 1))
    d = int(rng.integers(1, 51))
    scale = float(10.0 ** rng.uniform(-2, 2))
    offset = rng.normal(size=d) * scale * float(rng.uniform(0, 3))
    x = torch.tensor(offset + scale * rng.standard_normal((n, d)), dtype=dtype)
    return x, x.double().numpy(), rng


def _f_values(fmax: int, rng: np.random.Generator) -> list[int]:
    values = {0, fmax}
    if fmax > 1:
        values.add(int(rng.integers(1, fmax)))
    return sorted(values)


def _close(got: torch.Tensor, expected: np.ndarray, x: np.ndarray, rtol: float) -> None:
    scale = max(float(np.abs(x[np.isfinite(x)]).max()), 1e-300)
    diff = float(np.abs(got.double().cpu().numpy() - expected).max())
    assert diff <= rtol * scale, f"max |kernel - reference| = {diff:.3e} > {rtol * scale:.3e}"


def _seed(name: str, case: int, dtype: torch.dtype) -> int:
    return sum(map(ord, name)) * 1000 + case * 10 + (dtype == torch.float32)


# ---------------------------------------------------------------- f-parametrized aggregators

FmaxFn = Callable[[int], int]

F_RULES: dict[str, tuple[FmaxFn, int]] = {
    # name: (largest valid f for n rows, largest n to draw)
    "trimmed_mean": (lambda n: (n - 1) // 2, 25),
    "meamed": (lambda n: (n - 1) // 2, 25),
    "krum": (lambda n: (n - 3) // 2, 25),
    "multi_krum": (lambda n: (n - 3) // 2, 25),
    "bulyan": (lambda n: (n - 3) // 4, 25),
    "mda": (lambda n: (n - 1) // 2, 9),
    "smea": (lambda n: (n - 1) // 2, 9),
    "cge": (lambda n: n - 1, 25),
    "caf": (lambda n: (n - 1) // 2, 14),
}


def _f_cases(
    name: str, case: int, dtype: torch.dtype
) -> Iterator[tuple[torch.Tensor, np.ndarray, int]]:
    fmax_fn, n_hi = F_RULES[name]
    x, xn, rng = _draw(_seed(name, case, dtype), dtype, n_hi=n_hi)
    for f in _f_values(fmax_fn(x.shape[0]), rng):
        yield x, xn, f


@pytest.mark.parametrize(("dtype", "rtol"), DTYPES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", sorted(F_RULES))
def test_f_rule_matches_reference(name: str, case: int, dtype: torch.dtype, rtol: float) -> None:
    kernel, reference = getattr(K, name), getattr(ref, name)
    for x, xn, f in _f_cases(name, case, dtype):
        got = kernel(x, f=f)
        assert got.shape == (x.shape[1],)
        assert got.dtype == dtype
        _close(got, reference(xn, f), xn, rtol)


@pytest.mark.parametrize(("dtype", "rtol"), DTYPES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", ["krum", "multi_krum", "bulyan"])
def test_neighbour_convention_n_f_1(name: str, case: int, dtype: torch.dtype, rtol: float) -> None:
    kernel, reference = getattr(K, name), getattr(ref, name)
    for x, xn, f in _f_cases(name, case, dtype):
        got = kernel(x, f=f, neighbors="n-f-1")
        _close(got, reference(xn, f, neighbors="n-f-1"), xn, rtol)


@pytest.mark.parametrize(("dtype", "rtol"), DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_multi_krum_every_m(case: int, dtype: torch.dtype, rtol: float) -> None:
    x, xn, rng = _draw(_seed("multi_krum_m", case, dtype), dtype, n_lo=5)
    n = x.shape[0]
    for f in _f_values((n - 3) // 2, rng):
        for m in sorted({1, n, int(rng.integers(1, n + 1))}):
            for neighbors in ("n-f-2", "n-f-1"):
                got = K.multi_krum(x, f=f, m=m, neighbors=neighbors)
                _close(got, ref.multi_krum(xn, f, m, neighbors), xn, rtol)


def test_krum_neighbour_conventions_differ() -> None:
    """A hand-built case where k = n-f-2 and k = n-f-1 pick different rows."""
    # n=5, f=1: k=2 (n-f-2) or k=3 (n-f-1). Rows 0,1,2 form a tight pair plus a middle point.
    x = torch.tensor([[0.0], [0.1], [1.0], [1.05], [5.0]], dtype=torch.float64)
    a = ref.krum(x.numpy(), 1, "n-f-2")
    b = ref.krum(x.numpy(), 1, "n-f-1")
    assert a.tolist() != b.tolist(), "fixture no longer separates the conventions"
    assert K.krum(x, f=1).tolist() == a.tolist()
    assert K.krum(x, f=1, neighbors="n-f-1").tolist() == b.tolist()


# ---------------------------------------------------------------- parameter-free aggregators


@pytest.mark.parametrize(("dtype", "rtol"), DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_median_matches_reference(case: int, dtype: torch.dtype, rtol: float) -> None:
    x, xn, _ = _draw(_seed("median", case, dtype), dtype, n_lo=2)
    _close(K.median(x), ref.median(xn), xn, rtol)
    _close(K.median(x[:-1]), ref.median(xn[:-1]), xn, rtol)  # the other parity of n


@pytest.mark.parametrize("case", CASES)
def test_coordinatewise_rules_with_repeated_values(case: int) -> None:
    """Ties in the data (Sybil copies, quantized updates): values drawn from a small pool.

    n is odd, so the median is a data value and two *different* values are never at the same
    distance from it (the pool is continuous): the n − f closest values are a unique multiset.
    """
    rng = np.random.default_rng(900 + case)
    n = int(rng.choice([5, 7, 9, 11, 13]))
    d = 40
    pool = rng.normal(size=4) * 3.0
    xn = pool[rng.integers(0, 4, size=(n, d))]
    x = torch.tensor(xn)
    for f in range((n - 1) // 2 + 1):
        _close(K.trimmed_mean(x, f=f), ref.trimmed_mean(xn, f), xn, 1e-12)
        _close(K.meamed(x, f=f), ref.meamed(xn, f), xn, 1e-12)
    _close(K.median(x), ref.median(xn), xn, 1e-12)


def test_meamed_repeated_values_hand_computed() -> None:
    """[0, 0, 1, 1.5, 2.5], f = 2: median 1; the 3 closest values are 1, 1.5 and a 0."""
    x = torch.tensor([[0.0], [0.0], [1.0], [1.5], [2.5]], dtype=torch.float64)
    assert K.meamed(x, f=2).item() == pytest.approx(2.5 / 3)


def test_median_even_n_is_mean_of_middle_pair() -> None:
    x = torch.tensor([[4.0, -1.0], [1.0, 7.0], [3.0, 2.0], [10.0, 0.0]])
    assert K.median(x).tolist() == [3.5, 1.0]


@pytest.mark.parametrize(("dtype", "rtol"), DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_mean_matches_reference(case: int, dtype: torch.dtype, rtol: float) -> None:
    x, xn, rng = _draw(_seed("mean", case, dtype), dtype, n_lo=1)
    n = x.shape[0]
    _close(K.mean(x), ref.mean(xn), xn, rtol)
    w = rng.uniform(0, 100, size=n)
    w[rng.integers(0, n)] = 0.0 if n > 1 else 1.0  # a zero weight is allowed
    wt = torch.tensor(w, dtype=dtype)
    for mode in ("drop", "propagate", "raise"):
        got = K.mean(x, weights=wt, nonfinite=mode)
        _close(got, ref.mean(xn, wt.double().numpy()), xn, rtol)


@pytest.mark.parametrize(("dtype", "rtol"), DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_pairwise_sq_distances_matches_reference(
    case: int, dtype: torch.dtype, rtol: float
) -> None:
    x, xn, _ = _draw(_seed("pairwise", case, dtype), dtype, n_lo=1)
    got = K.pairwise_sq_distances(x)
    assert got.dtype == torch.float64
    assert got.shape == (x.shape[0], x.shape[0])
    expected = ref.pairwise_sq_distances(xn)
    scale = max(1.0, float(np.abs(xn).max())) ** 2 * xn.shape[1]
    assert float(np.abs(got.numpy() - expected).max()) <= rtol * scale


@pytest.mark.parametrize(("dtype", "rtol"), DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_monna_matches_reference(case: int, dtype: torch.dtype, rtol: float) -> None:
    x, xn, rng = _draw(_seed("monna", case, dtype), dtype)
    n = x.shape[0]
    for f in _f_values((n - 1) // 2, rng):
        for idx in sorted({0, n - 1, int(rng.integers(0, n))}):
            _close(K.monna(x, f=f, reference_index=idx), ref.monna(xn, f, idx), xn, rtol)


# ---------------------------------------------------------------- iterative aggregators


@pytest.mark.parametrize(("dtype", "rtol"), DTYPES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("init", ["zero", "mean", "median"])
def test_geometric_median_trajectory(case: int, init: str, dtype: torch.dtype, rtol: float) -> None:
    """tol=0 and a few iterations: the kernel must follow Weiszfeld's iterates exactly."""
    x, xn, _ = _draw(_seed("gm" + init, case, dtype), dtype)
    for max_iter in (0, 1, 3):
        got = K.geometric_median(x, init=init, tol=0.0, max_iter=max_iter)
        _close(got, ref.geometric_median(xn, init=init, tol=0.0, max_iter=max_iter), xn, 10 * rtol)


@pytest.mark.parametrize(("dtype", "rtol"), DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_geometric_median_converged(case: int, dtype: torch.dtype, rtol: float) -> None:
    x, xn, rng = _draw(_seed("gm-conv", case, dtype), dtype)
    n = x.shape[0]
    w = rng.uniform(0.5, 50, size=n)
    wt = torch.tensor(w, dtype=dtype)
    wn = wt.double().numpy()
    for init in ("zero", "median"):
        got = K.geometric_median(x, weights=wt, init=init)
        # same stopping rule: the two may stop one step apart, each step being <= tol * |z|
        expected = ref.geometric_median(xn, wn, init=init)
        _close(got, expected, xn, max(rtol * 10, 3e-6))
        # and the exact trajectory with weights
        got = K.geometric_median(x, weights=wt, init=init, tol=0.0, max_iter=2)
        _close(got, ref.geometric_median(xn, wn, init=init, tol=0.0, max_iter=2), xn, 10 * rtol)


def test_geometric_median_eps_clamp_keeps_data_point() -> None:
    """Starting exactly on a data point, beta = eps makes that point dominate: z stays there."""
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]], dtype=torch.float64)
    xn = x.numpy()
    for eps in (1e-12, 1e-3, 10.0):
        got = K.geometric_median(x, init="zero", eps=eps, tol=0.0, max_iter=4)
        expected = ref.geometric_median(xn, init="zero", eps=eps, tol=0.0, max_iter=4)
        # distances of ~eps are at the Gram matrix's rounding level: compare at 1e-10 of scale
        np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-10 * 5)
        if eps == 1e-12:
            assert float(np.linalg.norm(got.numpy())) < 1e-9


@pytest.mark.parametrize(("dtype", "rtol"), DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_centered_clipping_matches_reference(case: int, dtype: torch.dtype, rtol: float) -> None:
    x, xn, rng = _draw(_seed("cc", case, dtype), dtype, n_lo=1)
    spread = float(np.linalg.norm(xn - xn.mean(axis=0), axis=1).mean()) + 1e-3
    init_vec = torch.tensor(rng.normal(size=x.shape[1]) * spread, dtype=dtype)
    inits: list[str | torch.Tensor] = ["mean", "median", "zero", init_vec]
    for init in inits:
        for c_tau in (0.0, 0.3 * spread, 3.0 * spread):
            for M in (0, 1, 10):
                got = K.centered_clipping(x, c_tau=c_tau, M=M, init=init)
                ref_init = init if isinstance(init, str) else init.double().numpy()
                expected = ref.centered_clipping(xn, c_tau=c_tau, M=M, init=ref_init)
                _close(got, expected, xn, 10 * rtol)


def test_centered_clipping_hand_computed() -> None:
    """Pinned by hand, independently of the reference.

    From the median 1.5 of [0, 1, 2, 1000] the clipped differences are -1, -0.5, 0.5, 1: they
    cancel, so v stays at 1.5. From v = 0 (c_tau = 1): v1 = (0 + 1 + 1 + 1)/4 = 0.75.
    """
    x = torch.tensor([[0.0], [1.0], [2.0], [1000.0]], dtype=torch.float64)
    assert K.centered_clipping(x, c_tau=1.0, M=50, init="median").item() == pytest.approx(1.5)
    assert K.centered_clipping(x, c_tau=1.0, M=1, init="zero").item() == pytest.approx(0.75)


# ---------------------------------------------------------------- pre-aggregators


@pytest.mark.parametrize(("dtype", "rtol"), DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_clip_matches_reference(case: int, dtype: torch.dtype, rtol: float) -> None:
    x, xn, rng = _draw(_seed("clip", case, dtype), dtype, n_lo=1)
    norms = np.linalg.norm(xn, axis=1)
    w = torch.tensor(rng.uniform(1, 5, size=x.shape[0]), dtype=dtype)
    for threshold in (0.0, float(np.median(norms)), float(norms.max()) * 2):
        out, out_w = K.clip(x, weights=w, threshold=threshold)
        assert out.shape == x.shape
        assert out.dtype == dtype
        _close(out.reshape(-1), ref.clip(xn, threshold).reshape(-1), xn, rtol)
        assert out_w is not None
        assert torch.equal(out_w, w)


def test_clip_drops_infinite_rows() -> None:
    """The non-finite-row policy: rows with ±inf entries are left out, not clipped."""
    inf = math.inf
    x = torch.tensor([[inf, 3.0, -inf, 0.0], [1.0, -inf, 2.0, 2.0], [3.0, 4.0, 0.0, 0.0]])
    w = torch.tensor([1.0, 2.0, 3.0])
    out, out_w = K.clip(x, w, threshold=2.0)
    expected = ref.clip(x[2:].double().numpy(), 2.0)
    np.testing.assert_allclose(out.double().numpy(), expected, rtol=1e-6, atol=1e-7)
    assert expected[0].tolist() == pytest.approx([1.2, 1.6, 0.0, 0.0])
    assert out_w is not None
    assert out_w.tolist() == [3.0]


@pytest.mark.parametrize(("dtype", "rtol"), DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_arc_matches_reference(case: int, dtype: torch.dtype, rtol: float) -> None:
    x, xn, rng = _draw(_seed("arc", case, dtype), dtype, n_lo=2)
    for f in _f_values((x.shape[0] - 1) // 2, rng):
        out, _ = K.arc(x, f=f)
        assert out.shape == x.shape
        assert out.dtype == dtype
        _close(out.reshape(-1), ref.arc(xn, f).reshape(-1), xn, rtol)


@pytest.mark.parametrize(("dtype", "rtol"), DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_nnm_matches_reference(case: int, dtype: torch.dtype, rtol: float) -> None:
    x, xn, rng = _draw(_seed("nnm", case, dtype), dtype, n_lo=2)
    w = torch.tensor(rng.uniform(1, 5, size=x.shape[0]), dtype=dtype)
    for f in _f_values((x.shape[0] - 1) // 2, rng):
        out, out_w = K.nnm(x, weights=w, f=f)
        assert out.shape == x.shape
        assert out.dtype == dtype
        _close(out.reshape(-1), ref.nnm(xn, f).reshape(-1), xn, rtol)
        assert out_w is not None
        assert torch.equal(out_w, w)


def _recover_permutation(out_w: torch.Tensor, n: int, bucket_size: int) -> list[int]:
    """Input weights 2^i make every bucket's summed weight spell out its members in binary."""
    perm: list[int] = []
    for b, total in enumerate(out_w.double().tolist()):
        mask = round(total)
        assert mask == total, f"bucket {b} weight {total} is not a sum of distinct powers of 2"
        members = [i for i in range(n) if mask >> i & 1]
        last = b == len(out_w) - 1
        expected_size = n - bucket_size * b if last else bucket_size
        assert len(members) == expected_size, (b, members)
        perm.extend(members)
    assert sorted(perm) == list(range(n))
    return perm


@pytest.mark.parametrize(("dtype", "rtol"), DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_bucketing_matches_reference_for_its_permutation(
    case: int, dtype: torch.dtype, rtol: float
) -> None:
    x, xn, rng = _draw(_seed("bucketing", case, dtype), dtype, n_lo=1)
    n = x.shape[0]
    w = torch.tensor([2.0**i for i in range(n)], dtype=dtype)
    for bucket_size in sorted({1, 2, 3, n, n + 1, int(rng.integers(1, n + 1))}):
        gen = torch.Generator().manual_seed(int(rng.integers(0, 2**31)))
        out, out_w = K.bucketing(x, weights=w, bucket_size=bucket_size, generator=gen)
        buckets = math.ceil(n / bucket_size)
        assert out.shape == (buckets, x.shape[1])
        assert out.dtype == dtype
        assert out_w is not None
        assert out_w.shape == (buckets,)
        perm = _recover_permutation(out_w, n, bucket_size)
        exp_x, exp_w = ref.bucketing(
            xn, w.double().numpy(), bucket_size=bucket_size, permutation=perm
        )
        _close(out.reshape(-1), exp_x.reshape(-1), xn, rtol)
        assert out_w.double().tolist() == exp_w.tolist()


# ---------------------------------------------------------------- server optimizers

OPTIMIZERS: list[tuple[str, dict[str, float]]] = [
    ("server_sgd", {}),
    ("server_sgd", {"lr": 0.3}),
    ("fedavgm", {}),
    ("fedavgm", {"lr": 0.5, "momentum": 0.5}),
    ("fedadagrad", {}),
    ("fedadagrad", {"lr": 0.05, "tau": 0.1}),
    ("fedadam", {}),
    ("fedadam", {"lr": 0.02, "beta1": 0.5, "beta2": 0.9, "tau": 0.01}),
    ("fedyogi", {}),
    ("fedyogi", {"lr": 0.02, "beta1": 0.5, "beta2": 0.9, "tau": 0.01}),
]


@pytest.mark.parametrize(("dtype", "rtol"), DTYPES)
@pytest.mark.parametrize(
    ("name", "hp"), OPTIMIZERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(OPTIMIZERS)]
)
def test_server_optimizer_matches_reference(
    name: str, hp: dict[str, float], dtype: torch.dtype, rtol: float
) -> None:
    rng = np.random.default_rng(sum(map(ord, name)) + len(hp))
    d = 17
    params = torch.tensor(rng.normal(size=d), dtype=dtype)
    ref_params = params.double().numpy()
    state: dict[str, torch.Tensor] | None = None
    ref_state: dict[str, np.ndarray] | None = None
    for _ in range(5):
        # deltas of mixed magnitude, including some shrinking below sqrt(v) (Yogi's sign flips)
        delta = torch.tensor(rng.normal(size=d) * 10.0 ** rng.uniform(-3, 1, size=d), dtype=dtype)
        params, state = getattr(K, name)(params, delta, state, **hp)
        ref_params, ref_state = getattr(ref, name)(
            ref_params, delta.double().numpy(), ref_state, **hp
        )
        assert params.dtype == dtype
        assert params.shape == (d,)
        assert isinstance(state, dict)
        _close(params, ref_params, ref_params, 10 * rtol)
