"""The decision-first distance engine of Krum, Multi-Krum and NNM, and the one-pass paths.

Krum, Multi-Krum and NNM start from one uncentred product ``X Xᵀ`` with an entrywise rounding
bound (:func:`velocity.kernels._gram.fast_gram`), decide what the bounds decide, recompute in
float64 only the entries a decision still depends on (:meth:`SqDistanceBounds.refine`) and
fall back to the accurate engine when that is not enough. Here:

* the bound holds, including for rows of one repeated value (the worst case for systematic
  rounding) and for a large common component (cancellation);
* :func:`undetermined_per_row` is sound: when it reports nothing open, every value within the
  bounds selects the same rows (hypothesis);
* each of the three paths is taken where it should be — the fast path alone on
  benchmark-like data, the float64 refinement on an engineered near tie, the accurate engine
  on Sybil near-duplicates — and every one agrees with a float64 brute force;
* the one-pass mean, the scaled-copy clipping and the direct Weiszfeld iterations give what
  the paths they replace gave.
"""

from __future__ import annotations

import collections
import importlib

import kernels_reference as ref
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from velocity import kernels as K
from velocity.errors import ValidationError
from velocity.kernels import _gram
from velocity.kernels._checks import recording_drops
from velocity.kernels._select import smallest_per_row, undetermined_per_row

gm_module = importlib.import_module("velocity.kernels.geometric_median")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture
def stages(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """Counts how often the float64 refinement and the accurate fallback run."""
    seen: collections.Counter[str] = collections.Counter()
    refine, exact = _gram.SqDistanceBounds.refine, _gram.SqDistanceBounds.make_exact

    def counted_refine(self: _gram.SqDistanceBounds, *args: object, **kw: object) -> None:
        seen["refine"] += 1
        refine(self, *args, **kw)  # type: ignore[arg-type]

    def counted_exact(self: _gram.SqDistanceBounds) -> None:
        seen["exact"] += 1
        exact(self)

    monkeypatch.setattr(_gram.SqDistanceBounds, "refine", counted_refine)
    monkeypatch.setattr(_gram.SqDistanceBounds, "make_exact", counted_exact)
    return seen


def benchmark_rows(n: int, d: int, byzantine: int, seed: int = 0) -> torch.Tensor:
    """As ``benchmarks/aggregators.py``: honest mu + N(0, 1), Byzantine -3 mu + 0.1 N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(d, generator=g)
    x = torch.randn(n, d, generator=g)
    x[: n - byzantine] += mu
    x[n - byzantine :].mul_(0.1).add_(mu, alpha=-3.0)
    return x


# ---------------------------------------------------------------- the bound


def _families(d: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    a = torch.rand(9, 1, generator=g, dtype=torch.float64) + 0.5
    return {
        "iid": torch.randn(9, d, generator=g, dtype=torch.float64),
        "one value per row": a * torch.ones(9, d, dtype=torch.float64),
        "large common part": 1e3 + torch.randn(9, d, generator=g, dtype=torch.float64),
        "positive": torch.rand(9, d, generator=g, dtype=torch.float64),
    }


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("d", [7, 1000, 70_001])
def test_fast_gram_rounding_bound_holds(d: int, dtype: torch.dtype, batched: bool) -> None:
    for name, rows in _families(d).items():
        for x in (rows.to(dtype), rows.to(dtype).T.contiguous().T):  # and a strided view
            g, t = _gram.fast_gram(x, batched=batched)
            xd = x.double()
            exact = xd @ xd.T
            scale = xd.abs() @ xd.abs().T  # Σ_k |x_ik x_jk|
            assert bool(((g - exact).abs() <= t * scale).all()), name


def test_distance_bounds_contain_the_exact_distances() -> None:
    for name, rows in _families(5000).items():
        x = rows.float()
        _, bounds = _gram.distance_bounds(x, "test", None)
        exact = torch.tensor(ref.pairwise_sq_distances(x.double().numpy()))
        assert bool((bounds.lo() <= exact).all() & (exact <= bounds.hi()).all()), name
        bounds.refine(torch.tensor([2, 5]))
        assert bool((bounds.lo() <= exact).all() & (exact <= bounds.hi()).all()), name
        # refined entries are accurate to float64 rounding of the rows' spread
        assert float(bounds.error[2].max()) <= 1e-9 * float(exact.max()), name
        bounds.refine(torch.tensor([0]), torch.tensor([3, 4]))
        assert bool((bounds.lo() <= exact).all() & (exact <= bounds.hi()).all()), name
        assert torch.equal(bounds.value, bounds.value.T), name


def test_reduced_precision_products_widen_the_bound() -> None:
    x = torch.randn(4, 50)
    _, t_full = _gram.fast_gram(x)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        _, t_tf32 = _gram.fast_gram(x)
        got = K.krum(benchmark_rows(12, 300, 1), f=1)
    finally:
        torch.set_float32_matmul_precision(before)
    assert t_tf32 >= 2.0**-11 * 1000 > t_full
    xb = benchmark_rows(12, 300, 1)
    assert np.array_equal(got.double().numpy(), ref.krum(xb.double().numpy(), 1))


# ---------------------------------------------------------------- the decision rule


@st.composite
def boxes(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, int, float, int]:
    r = draw(st.integers(1, 4))
    n = draw(st.integers(2, 9))
    k = draw(st.integers(1, n - 1))
    rtol = draw(st.sampled_from([0.0, 1e-3, 0.2]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # coarse values: ties and overlapping boxes are common
    lo = rng.integers(0, 12, size=(r, n)).astype(np.float64)
    width = rng.integers(0, 4, size=(r, n)) * rng.choice([0.0, 0.01, 1.0], size=(r, n))
    return torch.tensor(lo), torch.tensor(lo + width), k, rtol, seed


def _selections(lo: torch.Tensor, hi: torch.Tensor, k: int, rtol: float, seed: int) -> set:
    rng = np.random.default_rng(seed + 1)
    picks = set()
    for trial in range(24):
        if trial == 0:
            values = lo
        elif trial == 1:
            values = hi
        else:
            u = torch.tensor(rng.random(lo.shape))
            if trial % 3 == 0:
                u = torch.round(u)  # corners
            values = lo + u * (hi - lo)
        chosen = smallest_per_row(values, k, rtol)
        picks.add(tuple(tuple(sorted(row)) for row in chosen.tolist()))
    return picks


@SETTINGS
@given(boxes())
def test_nothing_undetermined_means_one_selection(box: tuple) -> None:
    lo, hi, k, rtol, seed = box
    todo = undetermined_per_row(lo, hi, k, rtol)
    for i in range(lo.shape[0]):
        if not bool(todo[i].any()):
            assert len(_selections(lo[i : i + 1], hi[i : i + 1], k, rtol, seed)) == 1


@SETTINGS
@given(boxes())
def test_making_the_undetermined_entries_exact_decides(box: tuple) -> None:
    """Exact values inside the box: replacing only the undetermined entries by them (the rest
    stays at any estimate within the box) selects what the exact values select."""
    lo, hi, k, rtol, seed = box
    rng = np.random.default_rng(seed + 2)
    exact = lo + torch.tensor(rng.random(lo.shape)) * (hi - lo)
    todo = undetermined_per_row(lo, hi, k, rtol)
    estimate = lo + torch.tensor(rng.random(lo.shape)) * (hi - lo)
    lo2 = torch.where(todo, exact, lo)
    hi2 = torch.where(todo, exact, hi)
    mixed = torch.where(todo, exact, estimate)
    # the band's scale (a median) may still move within the box; where it does not matter,
    # the mixed values select the exact selection
    if not bool(undetermined_per_row(lo2, hi2, k, rtol).any()):
        got = smallest_per_row(mixed, k, rtol).sort(dim=1).values
        want = smallest_per_row(exact, k, rtol).sort(dim=1).values
        assert torch.equal(got, want)


# ---------------------------------------------------------------- the three paths


@pytest.mark.parametrize(("n", "d"), [(20, 20_000), (40, 5_000)])
def test_benchmark_data_is_decided_by_the_fast_path_alone(
    n: int, d: int, stages: collections.Counter[str]
) -> None:
    f = n // 10
    x = benchmark_rows(n, d, f)
    xn = x.double().numpy()
    for neighbors in ("n-f-1", "n-f-2"):
        assert np.array_equal(
            K.krum(x, f=f, neighbors=neighbors).numpy(), ref.krum(xn, f, neighbors)
        )
        got = K.multi_krum(x, f=f, neighbors=neighbors).double().numpy()
        np.testing.assert_allclose(got, ref.multi_krum(xn, f, None, neighbors), rtol=0, atol=2e-6)
    assert stages == {}


def _near_tie(dtype: torch.dtype) -> torch.Tensor:
    """12 rows of norm ~64 in which rows 0 and 1 have Krum scores 1e-5 apart (relative):
    far above float64 rounding and the tie band, far below the fast bound."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(12, 4096, generator=g, dtype=torch.float64)
    centre = x[2:].mean(dim=0)
    x[0] = centre + 0.3 * torch.randn(4096, generator=g, dtype=torch.float64)
    x[1] = x[0] + 1e-3 * torch.randn(4096, generator=g, dtype=torch.float64)
    return x.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_near_tie_is_refined_in_float64(
    dtype: torch.dtype, stages: collections.Counter[str]
) -> None:
    x = _near_tie(dtype)
    xn = x.double().numpy()
    scores = np.array(ref.krum_scores(ref.pairwise_sq_distances(xn), 12 - 1 - 2))
    gap = abs(scores[0] - scores[1]) / float(np.median(scores))
    assert 1e-6 < gap < 1e-4
    assert set(np.argsort(scores)[:2]) == {0, 1}
    got = K.krum(x, f=1)
    assert np.array_equal(got.double().numpy(), ref.krum(xn, 1))
    if dtype == torch.float32:  # float64 products bound every pair far below the gap
        assert stages["refine"] >= 1
    assert stages["exact"] == 0
    np.testing.assert_allclose(
        K.multi_krum(x, f=1, m=1).double().numpy(), ref.multi_krum(xn, 1, 1), rtol=0, atol=0
    )


def test_nnm_refines_only_the_pairs_a_choice_depends_on(stages: collections.Counter[str]) -> None:
    """Row 0's two farthest rows are 1e-5 apart (relative) in squared distance: only row 0's
    choice is open after the fast path, and only its pairs with those two are recomputed."""
    g = torch.Generator().manual_seed(4)
    d = 4096
    x = torch.zeros(10, d, dtype=torch.float64)
    x[1:8] = 2.0 * torch.randn(7, d, generator=g, dtype=torch.float64) / d**0.5
    e1 = torch.randn(d, generator=g, dtype=torch.float64)
    e2 = torch.randn(d, generator=g, dtype=torch.float64)
    x[8] = 4.0 * e1 / e1.norm()
    x[9] = 4.0 * (1 + 1e-5) * e2 / e2.norm()
    x = x.float()
    xn = x.double().numpy()
    out, _ = K.nnm(x, f=1)
    np.testing.assert_allclose(out.double().numpy(), ref.nnm(xn, 1), rtol=0, atol=1e-6)
    assert stages["refine"] == 1
    assert stages["exact"] == 0


def test_sybil_near_duplicates_fall_back_to_the_accurate_engine(
    stages: collections.Counter[str],
) -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(32, generator=g, dtype=torch.float64) * 1e3
    x = torch.cat(
        [
            base + 1e-4 * torch.randn(6, 32, generator=g, dtype=torch.float64),
            base + torch.randn(5, 32, generator=g, dtype=torch.float64),
        ]
    ).float()
    xn = x.double().numpy()
    for f in range(4):
        assert np.array_equal(K.krum(x, f=f).double().numpy(), ref.krum(xn, f)), f
    assert stages["exact"] >= 1


def test_nonfinite_rows_with_the_fast_path_are_the_finite_rows_bit_for_bit() -> None:
    x = benchmark_rows(20, 3000, 2)
    bad = x.clone()
    bad[3, 7] = float("nan")
    bad[11] = float("inf")
    keep = [i for i in range(20) if i not in (3, 11)]
    with recording_drops() as log:
        got = K.multi_krum(bad, f=4, m=10)
    assert log == [[3, 11]]
    assert torch.equal(got, K.multi_krum(x[keep], f=2, m=10))
    assert torch.equal(K.nnm(bad, f=4)[0], K.nnm(x[keep], f=2)[0])


# ---------------------------------------------------------------- the other one-pass paths


def test_gram_matches_a_plain_blockwise_centred_product() -> None:
    """The buffered gram() computes exactly what concatenating and centring each block did."""
    g = torch.Generator().manual_seed(9)
    x = torch.randn(7, 300_001, generator=g) + 5.0
    extras = torch.randn(2, 300_001, generator=g)
    centre = torch.randn(300_001, generator=g)
    for ext, c in ((None, None), (extras, None), (extras, centre), (None, centre)):
        rows = x if ext is None else torch.cat([x, ext])
        cols = max(256, (4 << 20) // (rows.shape[0] * 4))
        want = torch.zeros(rows.shape[0], rows.shape[0], dtype=torch.float64)
        for s in range(0, x.shape[1], cols):
            b = rows[:, s : s + cols]
            b = b - (b[:7].mean(dim=0, keepdim=True) if c is None else c[s : s + cols])
            want += (b @ b.T).double()
        assert torch.equal(_gram.gram(x, ext, c), want)


def test_sq_distances_to_a_point() -> None:
    x = benchmark_rows(9, 10_000, 2).double()
    z = x[4] + 1e-3
    want = ((x - z) ** 2).sum(dim=1)
    np.testing.assert_allclose(_gram.sq_distances_to(x, z).numpy(), want.numpy(), rtol=1e-12)
    bad = x.clone()
    bad[2, 5] = float("nan")
    assert not bool(torch.isfinite(_gram.sq_distances_to(bad, z)[2]))


def test_mean_checks_the_rows_only_when_the_result_says_so() -> None:
    x = torch.randn(6, 50)
    w = torch.tensor([1.0, 0.0, 2.0, 3.0, 1.0, 1.0])
    bad = x.clone()
    bad[1, 3] = float("inf")  # a zero-weight row: the result stays finite, the row is dropped
    with recording_drops() as log:
        got = K.mean(bad, w)
    assert log == [[1]]
    keep = [0, 2, 3, 4, 5]
    assert torch.equal(got, K.mean(x[keep], w[keep]))
    with pytest.raises(ValidationError, match=r"rows \[1\]"):
        K.mean(bad, w, nonfinite="raise")
    huge = torch.full((3, 4), 3e38)  # finite rows whose mean's sum overflows: checked, kept
    with recording_drops() as log:
        out = K.mean(huge)
    assert log == []
    assert torch.equal(out, K.mean(huge, nonfinite="propagate"))
    assert bool(torch.isfinite(out).all())


def _clip_reference(x: torch.Tensor, thr: float) -> torch.Tensor:
    """The copy-then-scale-rows path clip took before the scaled copy."""
    from velocity.kernels._clipping import clip_rows, row_norms

    out = x.clone()
    norms = row_norms(x)
    over = torch.nonzero(norms > thr).flatten()
    clip_rows(out, over, torch.full((over.numel(),), thr, dtype=torch.float64), norms[over])
    return out


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64], ids=str)
def test_scaled_copy_clipping_is_the_copy_then_scale_path(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(9, 333, generator=g) * torch.linspace(0.1, 10, 9)[:, None]).to(dtype)
    if dtype != torch.float16:
        x[4] = 1e30 if dtype == torch.float32 else 1e300  # finite; its norm overflows
    for thr in (0.0, 1.0, 30.0, 1e9):
        got, _ = K.clip(x, threshold=thr)
        assert torch.equal(got, _clip_reference(x, thr)), thr
        assert torch.equal(K.clip(x.clone(), threshold=thr, inplace=True)[0], got), thr
    for f in range(5):
        assert torch.equal(K.arc(x, f=f)[0], K.arc(x.clone(), f=f, inplace=True)[0]), f


@pytest.mark.parametrize("init", ["zero", "mean", "median"])
def test_direct_weiszfeld_matches_the_reference_and_the_gram_route(
    init: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = benchmark_rows(15, 2000, 3, seed=6)
    xn = x.double().numpy()
    w = torch.rand(15, generator=torch.Generator().manual_seed(3))
    # the kernel starts "mean" at the unweighted mean, the reference at the weighted one
    start = xn.mean(axis=0) if init == "mean" else init
    for iters in (0, 1, 3, 8):
        got = K.geometric_median(x, w, max_iter=iters, tol=0.0, eps=0.1, init=init)  # type: ignore[arg-type]
        want = ref.geometric_median(xn, w.numpy(), tol=0.0, max_iter=iters, eps=0.1, init=start)
        np.testing.assert_allclose(
            got.double().numpy(), want, rtol=0, atol=2e-5 * np.abs(want).max()
        )
        monkeypatch.setattr(gm_module, "DIRECT_MAX_ITER", -1)
        gram_route = K.geometric_median(x, w, max_iter=iters, tol=0.0, eps=0.1, init=init)  # type: ignore[arg-type]
        monkeypatch.undo()
        np.testing.assert_allclose(
            got.double().numpy(),
            gram_route.double().numpy(),
            rtol=0,
            atol=2e-5 * np.abs(want).max(),
        )
    # converged early: the direct loop stops on the same test as the Gram route
    np.testing.assert_allclose(
        K.geometric_median(x, max_iter=8, tol=1e-1, init=init).double().numpy(),  # type: ignore[arg-type]
        ref.geometric_median(xn, tol=1e-1, max_iter=8, init=init),
        rtol=0,
        atol=1e-4 * np.abs(xn).max(),
    )


def test_direct_weiszfeld_drops_nonfinite_rows_bit_for_bit() -> None:
    x = benchmark_rows(10, 500, 2)
    bad = x.clone()
    bad[6, 1] = float("-inf")
    keep = [i for i in range(10) if i != 6]
    with recording_drops() as log:
        got = K.geometric_median(bad, max_iter=3, init="mean")
    assert log == [[6]]
    assert torch.equal(got, K.geometric_median(x[keep], max_iter=3, init="mean"))
    with pytest.raises(ValidationError, match="all 2 rows"):
        K.geometric_median(torch.full((2, 3), float("nan")), max_iter=2)
