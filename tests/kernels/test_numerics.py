"""Numerical accuracy of the distance engine and the kernels built on it.

* Sybil clusters: rows of norm ~1e3 that differ by 1e-4-scale perturbations, exact duplicates,
  and an honest spread of scale 1 around the same point (nested scales). Squared distances must
  match a float64 brute force to 1e-6 relative, and Krum / Multi-Krum / NNM must select what
  the float64 reference selects.
* A far outlier (a Byzantine row at 1e6) must not destroy the precision of the honest rows'
  geometry, in float32 too: that is the situation robust rules exist for.
* Large d (n = 12, d = 200 000, float32, one run): everything runs, agrees with a float64
  reference, and the peak memory stays near the input size.
* MDA / SMEA refuse when C(n, f) exceeds ``max_subsets`` and finish n = 20, f = 4.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import kernels_reference as ref
import numpy as np
import pytest
import torch

from velocity import kernels as K
from velocity.errors import ValidationError

D = 64


def sybil_rows(dtype: torch.dtype, eps: float, seed: int = 0) -> torch.Tensor:
    """12 rows: a near-duplicate cluster around x (4 rows, ±eps) + 2 exact copies of row 0,
    a second cluster around y (3 rows, ±eps), and 3 rows at distance ~1 from x."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(D, generator=g, dtype=torch.float64)
    x = x / x.norm() * 1e3
    y = x + torch.randn(D, generator=g, dtype=torch.float64) * 5.0
    near_x = x + eps * torch.randn(4, D, generator=g, dtype=torch.float64)
    near_y = y + eps * torch.randn(3, D, generator=g, dtype=torch.float64)
    spread = x + 0.15 * torch.randn(3, D, generator=g, dtype=torch.float64)
    rows = torch.cat([near_x, near_x[:1], near_x[:1], near_y, spread]).to(dtype)
    return rows


def _assert_sq_distances_accurate(got: torch.Tensor, x: torch.Tensor) -> None:
    expected = ref.pairwise_sq_distances(x.double().numpy())
    g = got.numpy()
    smallest = float(expected[expected > 0].min())
    err = np.abs(g - expected)
    # float64: 1e-6 relative everywhere. float32: the documented precision (docs/kernels.md)
    # is about 1e-5 relative — pairs just above the refinement threshold keep float32 GEMM
    # rounding of ~1e-7 of their centred squared norms; nested clusters are refined.
    rtol = 1e-6 if x.dtype == torch.float64 else 5e-5
    # exact duplicates must stay far below the closest real pair
    bound = rtol * expected + 1e-6 * smallest
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert bool((err <= bound).all()), (
        f"pair {worst}: got {g[worst]:.9e}, expected {expected[worst]:.9e}"
    )


@pytest.mark.parametrize("eps", [1e-4, 1e-2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_sybil_pairwise_sq_distances(dtype: torch.dtype, eps: float) -> None:
    x = sybil_rows(dtype, eps)
    _assert_sq_distances_accurate(K.pairwise_sq_distances(x), x)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_exact_duplicates_are_at_distance_zero(dtype: torch.dtype) -> None:
    x = sybil_rows(dtype, 1e-3)
    dist = K.pairwise_sq_distances(x)
    assert float(dist[0, 4]) == 0.0
    assert float(dist[0, 5]) == 0.0
    assert float(dist[4, 5]) == 0.0


# float32 selection tests use eps = 1e-2: at 1e-4 a float32 coordinate of ~125 resolves the
# perturbation in only ~13 steps, and a different selection of near-duplicates would move a
# float32 mean by about its own rounding error. Krum returns a row, so it is exact at 1e-4.
SELECTION = [
    pytest.param(torch.float64, 1e-4, id="f64-1e-4"),
    pytest.param(torch.float32, 1e-2, id="f32-1e-2"),
]


@pytest.mark.parametrize(("dtype", "eps"), [*SELECTION, pytest.param(torch.float32, 1e-4)])
@pytest.mark.parametrize("neighbors", ["n-f-2", "n-f-1"])
def test_sybil_krum_picks_the_reference_row(dtype: torch.dtype, eps: float, neighbors: str) -> None:
    x = sybil_rows(dtype, eps)
    xn = x.double().numpy()
    for f in range(0, 5):
        got = K.krum(x, f=f, neighbors=neighbors).double().numpy()
        assert np.array_equal(got, ref.krum(xn, f, neighbors)), f


@pytest.mark.parametrize(("dtype", "eps"), SELECTION)
def test_sybil_multi_krum_and_nnm_match_reference(dtype: torch.dtype, eps: float) -> None:
    x = sybil_rows(dtype, eps)
    xn = x.double().numpy()
    # A different choice among near-duplicates moves a mean by ~eps/m (>= 1e-3 in float32);
    # float32 rounding of coordinates up to ~400 is ~3e-5: 2e-4 separates the two.
    tol = 1e-9 if dtype == torch.float64 else 2e-4
    for f in range(0, 5):
        for m in (1, 2, 3, 7, None):
            got = K.multi_krum(x, f=f, m=m).double().numpy()
            np.testing.assert_allclose(got, ref.multi_krum(xn, f, m), rtol=0, atol=tol)
        out, _ = K.nnm(x, f=f)
        np.testing.assert_allclose(out.double().numpy(), ref.nnm(xn, f), rtol=0, atol=tol)


# ---------------------------------------------------------------- far outlier


def _outlier_rows(dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    center = torch.randn(10, generator=g, dtype=torch.float64) * 2.0
    honest = center + 0.1 * torch.randn(9, 10, generator=g, dtype=torch.float64)
    byz = 1e6 + 1e3 * torch.randn(2, 10, generator=g, dtype=torch.float64)
    return torch.cat([honest, byz]).to(dtype)


FAR_OUTLIER_RULES = {
    "krum": (lambda x: K.krum(x, f=2), lambda a: ref.krum(a, 2)),
    "multi_krum": (lambda x: K.multi_krum(x, f=2, m=3), lambda a: ref.multi_krum(a, 2, 3)),
    "bulyan": (lambda x: K.bulyan(x, f=2), lambda a: ref.bulyan(a, 2)),
    "mda": (lambda x: K.mda(x, f=2), lambda a: ref.mda(a, 2)),
    "smea": (lambda x: K.smea(x, f=2), lambda a: ref.smea(a, 2)),
    "monna": (lambda x: K.monna(x, f=2), lambda a: ref.monna(a, 2)),
    "caf": (lambda x: K.caf(x, f=2), lambda a: ref.caf(a, 2)),
    "geometric_median": (
        lambda x: K.geometric_median(x, tol=0.0, max_iter=300),
        lambda a: ref.geometric_median(a, tol=0.0, max_iter=300),
    ),
    "centered_clipping": (
        lambda x: K.centered_clipping(x, c_tau=0.3, init="median"),
        lambda a: ref.centered_clipping(a, c_tau=0.3, init="median"),
    ),
    "nnm": (lambda x: K.nnm(x, f=2)[0][:9], lambda a: ref.nnm(a, 2)[:9]),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("name", sorted(FAR_OUTLIER_RULES))
def test_far_outlier_keeps_honest_geometry(name: str, dtype: torch.dtype) -> None:
    """Same float values, float64 reference: errors relative to the honest rows' scale (~5)."""
    x = _outlier_rows(dtype)
    xn = x.double().numpy()
    kernel, reference = FAR_OUTLIER_RULES[name]
    honest_scale = float(np.abs(xn[:9]).max())
    err = float(np.abs(kernel(x).double().numpy() - reference(xn)).max())
    # A direct float64 computation is accurate to ~1e-15 here; 1e-8 leaves room for a Gram
    # matrix whose honest block is refined, not for one that is not (errors ~(1e6/0.3)²·1e-16).
    rtol = 1e-8 if dtype == torch.float64 else 1e-5
    assert err <= rtol * honest_scale, f"{name}: error {err:.3e} vs honest scale {honest_scale:.3g}"


# ---------------------------------------------------------------- large d


@pytest.fixture(scope="module")
def wide() -> tuple[torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(11)
    x = (torch.randn(12, 200_000, generator=g) * 0.01 + torch.randn(200_000, generator=g)).float()
    x[10] += 0.5  # two outlying rows
    x[11] -= 0.3
    return x, x.double().numpy()


def test_large_d_coordinatewise(wide: tuple[torch.Tensor, np.ndarray]) -> None:
    x, xn = wide
    cols = np.random.default_rng(0).choice(x.shape[1], 64, replace=False)
    sub = xn[:, cols]
    pairs = {
        "median": (K.median(x), ref.median(sub)),
        "trimmed_mean": (K.trimmed_mean(x, f=3), ref.trimmed_mean(sub, 3)),
        "meamed": (K.meamed(x, f=3), ref.meamed(sub, 3)),
        "mean": (K.mean(x), ref.mean(sub)),
    }
    for name, (got, expected) in pairs.items():
        assert got.shape == (x.shape[1],)
        assert got.dtype == torch.float32
        np.testing.assert_allclose(
            got.double().numpy()[cols], expected, rtol=0, atol=1e-6, err_msg=name
        )


def test_large_d_distance_rules(wide: tuple[torch.Tensor, np.ndarray]) -> None:
    x, xn = wide
    scale = float(np.abs(xn).max())
    dist = K.pairwise_sq_distances(x).numpy()
    expected_dist = ref.pairwise_sq_distances(xn)
    # float32 GEMM over 200 000 columns (float64 across column blocks): 1e-5 relative
    np.testing.assert_allclose(dist, expected_dist, rtol=1e-5, atol=0)
    cases = {
        "krum": (K.krum(x, f=2), ref.krum(xn, 2)),
        "multi_krum": (K.multi_krum(x, f=2), ref.multi_krum(xn, 2)),
        "bulyan": (K.bulyan(x, f=2), ref.bulyan(xn, 2)),
        "mda": (K.mda(x, f=2), ref.mda(xn, 2)),
        "smea": (K.smea(x, f=2), ref.smea(xn, 2)),
        "monna": (K.monna(x, f=2, reference_index=1), ref.monna(xn, 2, 1)),
        "cge": (K.cge(x, f=2), ref.cge(xn, 2)),
        "caf": (K.caf(x, f=2), ref.caf(xn, 2)),
        "geometric_median": (K.geometric_median(x), ref.geometric_median(xn)),
        "centered_clipping": (
            K.centered_clipping(x, c_tau=1.0, init="median"),
            ref.centered_clipping(xn, c_tau=1.0, init="median"),
        ),
        "nnm": (K.nnm(x, f=2)[0], ref.nnm(xn, 2)),
        "arc": (K.arc(x, f=2)[0], ref.arc(xn, 2)),
        "clip": (K.clip(x, threshold=50.0)[0], ref.clip(xn, 50.0)),
    }
    failures = []
    for name, (got, expected) in cases.items():
        assert got.dtype == torch.float32, name
        err = float(np.abs(got.double().numpy() - expected).max())
        if not err <= 2e-5 * scale:
            failures.append(f"{name}: {err:.3e}")
    assert not failures, failures


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, torch
    from velocity import kernels as K
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 200_000, generator=g)
    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    K.median(x[:, :1000]); K.krum(x[:, :1000], f=2)  # warm up lazy imports and pools
    base = peak()
    growth = {}
    calls = {
        "median": lambda: K.median(x),
        "trimmed_mean": lambda: K.trimmed_mean(x, f=3),
        "meamed": lambda: K.meamed(x, f=3),
        "krum": lambda: K.krum(x, f=2),
        "multi_krum": lambda: K.multi_krum(x, f=2),
        "bulyan": lambda: K.bulyan(x, f=2),
        "mda": lambda: K.mda(x, f=2),
        "smea": lambda: K.smea(x, f=2),
        "caf": lambda: K.caf(x, f=2),
        "geometric_median": lambda: K.geometric_median(x),
        "centered_clipping": lambda: K.centered_clipping(x, c_tau=1.0),
        "nnm": lambda: K.nnm(x, f=2),
        "pairwise_sq_distances": lambda: K.pairwise_sq_distances(x),
    }
    for name, call in calls.items():
        call()
        growth[name] = peak() - base
    print(json.dumps({"input": x.numel() * 4, "growth": growth}))
    """
)


def test_large_d_peak_memory_stays_near_the_input() -> None:
    """Peak RSS growth over all kernels ≤ 6 input sizes (an (n, n, d) temporary would be 12)."""
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    limit = 6 * report["input"]
    # growth is cumulative (a high-water mark): the first name over the limit is the culprit
    over = {k: v for k, v in report["growth"].items() if v > limit}
    assert not over, (over, report["input"])


# ---------------------------------------------------------------- subset search limits


@pytest.mark.parametrize("name", ["mda", "smea"])
def test_subset_rules_refuse_too_many_subsets(name: str) -> None:
    x = torch.randn(20, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    combos = math.comb(20, 4)  # 4845
    with pytest.raises(ValidationError) as info:
        getattr(K, name)(x, f=4, max_subsets=combos - 1)
    message = str(info.value)
    assert name.lower() in message.lower() or name.upper() in message
    assert str(combos) in message, message
    assert str(combos - 1) in message, message
    # the limit is inclusive and the default is generous enough for n=20, f=4
    getattr(K, name)(x, f=4, max_subsets=combos)


@pytest.mark.parametrize("name", ["mda", "smea"])
def test_subset_rules_finish_n20_f4(name: str) -> None:
    x = torch.randn(20, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x[:4] += 8.0  # four outliers that the exact search must drop
    got = getattr(K, name)(x, f=4)
    expected = getattr(ref, name)(x.numpy(), 4)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got.numpy(), x[4:].mean(dim=0).numpy(), rtol=1e-10, atol=1e-12)


def test_coordinatewise_workers_do_not_change_the_callers_threads() -> None:
    """Worker threads run torch single-threaded; the caller keeps its thread count.

    (A torch op on a worker with the default count gives it an OpenMP team of its own, which
    slowed every later torch op of the process 2-3x.)
    """
    from velocity.kernels import _coordinate

    before = torch.get_num_threads()
    _coordinate.coordinatewise(torch.randn(8, 300_000), lambda b: b[:, 4], out_dtype=torch.float32)
    assert torch.get_num_threads() == before
    if before > 1:
        pool = _coordinate._executor(before)
        assert pool.submit(torch.get_num_threads).result() == 1
