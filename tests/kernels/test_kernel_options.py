"""The optional keyword arguments of the aggregation kernels, against brute-force references.

``median(even=...)``, ``meamed(even=..., strict=...)``, ``krum`` / ``multi_krum`` / ``mda``
``(strict=...)``, ``caf(power_iters=..., power_start=...)`` and ``bucketing(perm=...)``. The
references are float64 loops written from the kernels' docstrings (the lower median is the
order statistic at ``(n − 1) // 2``; ``strict=False`` only relaxes the check on n; the
power-iteration CAF is ByzPy's loop with the start direction made explicit). Defaults are
checked to be bit-identical to passing the default values explicitly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import kernels_reference as ref
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from velocity import kernels as K
from velocity.errors import ValidationError

DTYPES = [
    pytest.param(torch.float64, 1e-10, id="f64"),
    pytest.param(torch.float32, 3e-6, id="f32"),
]
CASES = range(4)


def _draw(
    seed: int, dtype: torch.dtype, *, n_lo: int = 2, n_hi: int = 12, d_hi: int = 12
) -> tuple[torch.Tensor, np.ndarray, np.random.Generator]:
    """A random ``(n, d)`` tensor, its exact float64 copy, and the generator (no ties)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(n_lo, n_hi + 1))
    d = int(rng.integers(1, d_hi + 1))
    scale = float(10.0 ** rng.uniform(-2, 2))
    offset = rng.normal(size=d) * scale * float(rng.uniform(0, 3))
    x = torch.tensor(offset + scale * rng.standard_normal((n, d)), dtype=dtype)
    return x, x.double().numpy(), rng


def _close(got: torch.Tensor, expected: np.ndarray, x: np.ndarray, rtol: float) -> None:
    scale = max(float(np.abs(x[np.isfinite(x)]).max()), 1e-300)
    diff = float(np.abs(got.double().cpu().numpy() - expected).max())
    assert diff <= rtol * scale, f"max |kernel - reference| = {diff:.3e} > {rtol * scale:.3e}"


def _finite(xn: np.ndarray) -> np.ndarray:
    return np.array([bool(np.isfinite(row).all()) for row in xn], dtype=bool)


# --------------------------------------------------------------------------- references


def _lower_median(values: Sequence[float]) -> float:
    s = sorted(values)
    return s[(len(s) - 1) // 2]


def ref_median_lower(xn: np.ndarray) -> np.ndarray:
    a = xn[_finite(xn)]
    return np.array([_lower_median(list(a[:, j])) for j in range(a.shape[1])])


def ref_meamed(xn: np.ndarray, f: int, even: str) -> np.ndarray:
    """Mean of the n − f values closest to the (mean-of-middle or lower) median, per column."""
    n = xn.shape[0]
    out = []
    for j in range(xn.shape[1]):
        col = [float(v) for v in xn[:, j]]
        s = sorted(col)
        if even == "lower" or n % 2 == 1:
            med = s[(n - 1) // 2]
        else:
            med = (s[n // 2 - 1] + s[n // 2]) / 2.0
        closest = sorted(col, key=lambda v, med=med: abs(v - med))[: n - f]  # type: ignore[misc]
        out.append(sum(closest) / len(closest))
    return np.array(out)


def ref_caf_power(xn: np.ndarray, f: int, iters: int, start: np.ndarray | None) -> np.ndarray:
    """CAF with ``iters`` power-iteration steps from ``start`` (all-ones when None).

    The weighted mean, a fresh power iteration from the start direction at every step (stopping
    when the iterate's norm is <= 1e-12), λ the weighted variance along the final direction,
    τ_i over *all* rows, the loop ending when ``max τ <= 1e-12`` or the weights run out.
    """
    n, d = xn.shape
    w = np.ones(n)
    total = float(n)
    best_mu = xn.mean(axis=0)
    best_lam = math.inf
    u0 = np.ones(d) if start is None else np.array(start, dtype=np.float64)
    if float(np.linalg.norm(u0)) == 0.0:
        u0 = np.ones(d)
    u0 = u0 / np.linalg.norm(u0)
    while total > n - 2 * f:
        mu = sum(w[i] * xn[i] for i in range(n)) / total
        diffs = xn - mu
        vec = u0.copy()
        for _ in range(iters):
            nxt = sum(w[i] * float(diffs[i] @ vec) * diffs[i] for i in range(n))
            size = float(np.linalg.norm(nxt))
            if size <= 1e-12:
                break
            vec = nxt / size
        proj = np.array([float(diffs[i] @ vec) for i in range(n)])
        lam = float(np.sum(w * proj**2)) / max(1e-12, float(w.sum()))
        if lam < best_lam:
            best_lam, best_mu = lam, mu.copy()
        tau = proj**2
        tau_max = float(tau.max())
        if tau_max <= 1e-12:
            break
        w = np.clip(w * (1.0 - tau / tau_max), 0.0, None)
        total = float(w.sum())
        if total <= 0.0:
            break
    return np.asarray(best_mu, dtype=np.float64)


# --------------------------------------------------------------------------- median(even=)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", range(6))
def test_median_lower_is_the_lower_middle_order_statistic(case: int, dtype: torch.dtype) -> None:
    x, xn, _ = _draw(100 + case, dtype, n_lo=1, n_hi=16, d_hi=30)
    got = K.median(x, even="lower")
    assert got.dtype == dtype
    # a data value: exact, in either dtype
    assert got.double().numpy().tolist() == ref_median_lower(xn).tolist()
    assert torch.equal(got, torch.median(x, dim=0).values)  # torch's (lower) convention
    if x.shape[0] % 2 == 1:
        assert torch.equal(got, K.median(x))
    elif x.shape[0] >= 2:
        _close(K.median(x), ref.median(xn), xn, 1e-6)


def test_median_lower_hand_computed() -> None:
    x = torch.tensor([[1.0, 9.0], [2.0, -3.0], [4.0, 0.0], [100.0, 5.0]])
    assert K.median(x, even="lower").tolist() == [2.0, 0.0]
    assert K.median(x).tolist() == [3.0, 2.5]
    assert K.median(x, even="mean").tolist() == [3.0, 2.5]


def test_median_lower_uses_parity_of_the_finite_rows() -> None:
    # 5 rows, one NaN: the lower median of the 4 finite rows, not the middle of 5
    x = torch.tensor([[3.0], [float("nan")], [1.0], [7.0], [5.0]])
    assert K.median(x, even="lower").tolist() == [3.0]
    assert K.median(x).tolist() == [4.0]
    x = torch.tensor([[3.0], [float("inf")], [1.0], [7.0], [5.0], [-float("inf")]])
    assert K.median(x, even="lower").tolist() == [3.0]


@pytest.mark.parametrize("even", ["upper", "MEAN", "", None, 0, "low"])
def test_median_unknown_even_refused(even: object) -> None:
    with pytest.raises(ValidationError, match="even"):
        K.median(torch.ones(4, 2), even=even)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- meamed(even=, strict=)


@pytest.mark.parametrize(("dtype", "rtol"), DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_meamed_even_lower_matches_reference(case: int, dtype: torch.dtype, rtol: float) -> None:
    x, xn, _ = _draw(200 + case, dtype, n_lo=2, n_hi=14, d_hi=25)
    n = x.shape[0]
    for f in range((n - 1) // 2 + 1):
        got = K.meamed(x, f=f, even="lower")
        assert got.dtype == dtype
        _close(got, ref_meamed(xn, f, "lower"), xn, rtol)
        if n % 2 == 1:
            assert torch.equal(got, K.meamed(x, f=f))


@pytest.mark.parametrize(("dtype", "rtol"), DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_meamed_lenient_matches_reference(case: int, dtype: torch.dtype, rtol: float) -> None:
    """``strict=False``: every f < n, for both medians (mean-of-middle with keep = 1 and even n
    is left out: the two middle values are then equally close and either is right)."""
    x, xn, _ = _draw(300 + case, dtype, n_lo=2, n_hi=14, d_hi=25)
    n = x.shape[0]
    for f in range((n - 1) // 2 + 1, n):
        for even in ("mean", "lower"):
            if even == "mean" and n % 2 == 0 and f == n - 1:
                continue
            got = K.meamed(x, f=f, even=even, strict=False)
            _close(got, ref_meamed(xn, f, even), xn, rtol)


def test_meamed_options_hand_computed() -> None:
    # [0, 1, 3, 10], f = 2 (needs strict=False): lower median 1 -> {0, 1}; mean median 2 -> {1, 3}
    x = torch.tensor([[0.0], [1.0], [3.0], [10.0]], dtype=torch.float64)
    assert K.meamed(x, f=2, even="lower", strict=False).tolist() == [0.5]
    assert K.meamed(x, f=2, strict=False).tolist() == [2.0]
    # f = 3: the single value closest to the lower median is the lower median itself
    assert K.meamed(x, f=3, even="lower", strict=False).tolist() == [1.0]
    # f = 1 (strict): lower median 1 -> {0, 1, 3}; mean median 2 -> {1, 3, 0}: both 4/3
    assert K.meamed(x, f=1, even="lower").item() == pytest.approx(4 / 3)


def test_meamed_strict_refusals() -> None:
    x = torch.randn(4, 3)
    with pytest.raises(ValidationError, match=r"^meamed needs n > 2f; got n=4, f=2$"):
        K.meamed(x, f=2)
    with pytest.raises(ValidationError, match=r"^meamed needs n > 2f; got n=4, f=2$"):
        K.meamed(x, f=2, strict=True, even="lower")
    K.meamed(x, f=3, strict=False)
    for f in (4, 5):
        with pytest.raises(ValidationError, match=rf"needs n > f \(strict=False\); got n=4, f={f}"):
            K.meamed(x, f=f, strict=False)
    with pytest.raises(ValidationError, match="even"):
        K.meamed(x, f=1, even="upper")  # type: ignore[arg-type]


def test_meamed_lenient_nonfinite_rows_count_against_f() -> None:
    x, _, rng = _draw(350, torch.float64, n_lo=7, n_hi=9, d_hi=6)
    n = x.shape[0]
    bad = rng.choice(n, size=2, replace=False)
    x[bad[0], 0] = float("nan")
    x[bad[1], -1] = float("inf")
    kept = np.delete(x.numpy(), bad, axis=0)
    for f in range(max(2, (n - 1) // 2 + 1), n):
        for even in ("mean", "lower"):
            if even == "mean" and (n - 2) % 2 == 0 and f == n - 1:
                continue
            got = K.meamed(x, f=f, even=even, strict=False)
            _close(got, ref_meamed(kept, f - 2, even), kept, 1e-12)
    with pytest.raises(ValidationError):
        K.meamed(x, f=1, strict=False)  # 2 non-finite rows > f


# --------------------------------------------------------------------------- krum(strict=)


@pytest.mark.parametrize(("dtype", "rtol"), DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_krum_lenient_matches_reference(case: int, dtype: torch.dtype, rtol: float) -> None:
    """``strict=False``: f from just past the strict bound up to n − 2, both neighbour counts
    (with ``"n-f-2"`` and f = n − 2 no neighbour counts: all scores 0, row 0 / the first m)."""
    x, xn, rng = _draw(400 + case, dtype, n_lo=3, n_hi=14, d_hi=20)
    n = x.shape[0]
    for f in range(max(0, (n - 3) // 2 + 1), n - 1):
        for neighbors in ("n-f-2", "n-f-1"):
            got = K.krum(x, f=f, neighbors=neighbors, strict=False)
            assert torch.equal(got.double(), torch.tensor(ref.krum(xn, f, neighbors)))
            for m in sorted({None, 1, n, int(rng.integers(1, n + 1))}, key=lambda v: v or 0):
                got = K.multi_krum(x, f=f, m=m, neighbors=neighbors, strict=False)
                _close(got, ref.multi_krum(xn, f, m, neighbors), xn, rtol)


def test_krum_lenient_hand_computed() -> None:
    # n = 4, f = 2 (strict needs n > 6). "n-f-1": one neighbour; scores 4, 1, 1, 49 -> tie
    # between rows 1 and 2, the lower index wins. "n-f-2": no neighbour, row 0.
    x = torch.tensor([[0.0], [2.0], [3.0], [10.0]], dtype=torch.float64)
    assert K.krum(x, f=2, neighbors="n-f-1", strict=False).tolist() == [2.0]
    assert K.krum(x, f=2, strict=False).tolist() == [0.0]
    assert K.multi_krum(x, f=2, neighbors="n-f-1", strict=False).tolist() == [2.5]
    # m = 3: rows 1, 2, 0 ("n-f-1") and rows 0, 1, 2 (all scores 0, lowest indices)
    assert K.multi_krum(x, f=2, m=3, neighbors="n-f-1", strict=False).item() == pytest.approx(5 / 3)
    assert K.multi_krum(x, f=2, m=3, strict=False).item() == pytest.approx(5 / 3)
    # m = 2 with "n-f-2": the two lowest indices, rows 0 and 1
    assert K.multi_krum(x, f=2, m=2, strict=False).tolist() == [1.0]


@pytest.mark.parametrize("rule", ["krum", "multi_krum"])
def test_krum_strict_refusals(rule: str) -> None:
    fn: Callable[..., torch.Tensor] = getattr(K, rule)
    x = torch.randn(6, 3)
    with pytest.raises(ValidationError, match=rf"^{rule} needs n > 2f \+ 2; got n=6, f=2$"):
        fn(x, f=2)
    with pytest.raises(ValidationError, match=rf"^{rule} needs n > 2f \+ 2; got n=6, f=2$"):
        fn(x, f=2, strict=True)
    fn(x, f=4, strict=False)  # n = f + 2
    for f in (5, 6, 9):
        with pytest.raises(
            ValidationError, match=rf"^{rule} needs n > f \+ 1 \(strict=False\); got n=6, f={f}$"
        ):
            fn(x, f=f, strict=False)


def test_krum_lenient_nonfinite_rows_count_against_f() -> None:
    x, _, _ = _draw(450, torch.float64, n_lo=8, n_hi=8, d_hi=5)
    x[[1, 5], 0] = float("nan")
    kept = np.delete(x.numpy(), [1, 5], axis=0)
    for f in range(3, 7):
        for neighbors in ("n-f-2", "n-f-1"):
            got = K.krum(x, f=f, neighbors=neighbors, strict=False)
            assert got.tolist() == ref.krum(kept, f - 2, neighbors).tolist()
            got = K.multi_krum(x, f=f, neighbors=neighbors, strict=False)
            _close(got, ref.multi_krum(kept, f - 2, 8 - f, neighbors), kept, 1e-12)


@pytest.mark.parametrize("strict", [None, 0, "no", 1.0])
@pytest.mark.parametrize("rule", ["krum", "multi_krum", "mda", "meamed"])
def test_non_bool_strict_refused(rule: str, strict: object) -> None:
    fn: Callable[..., torch.Tensor] = getattr(K, rule)
    with pytest.raises(ValidationError, match="strict"):
        fn(torch.randn(9, 2), f=3, strict=strict)


# --------------------------------------------------------------------------- mda(strict=)


@pytest.mark.parametrize(("dtype", "rtol"), DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_mda_lenient_matches_reference(case: int, dtype: torch.dtype, rtol: float) -> None:
    x, xn, _ = _draw(500 + case, dtype, n_lo=2, n_hi=9, d_hi=15)
    n = x.shape[0]
    for f in range((n - 1) // 2 + 1, n):
        _close(K.mda(x, f=f, strict=False), ref.mda(xn, f), xn, rtol)


def test_mda_lenient_hand_computed() -> None:
    # n = 5, f = 3: the closest pair is (6, 6.5); f = 4: singletons all have diameter 0 -> row 0
    x = torch.tensor([[0.0], [1.0], [5.0], [6.0], [6.5]], dtype=torch.float64)
    assert K.mda(x, f=3, strict=False).tolist() == [6.25]
    assert K.mda(x, f=4, strict=False).tolist() == [0.0]
    x[0, 0] = float("nan")  # counts against f: MDA of the 4 finite rows with f = 2
    assert K.mda(x, f=3, strict=False).tolist() == [6.25]


def test_mda_strict_refusals() -> None:
    x = torch.randn(4, 2)
    with pytest.raises(ValidationError, match=r"^mda needs n > 2f; got n=4, f=2$"):
        K.mda(x, f=2)
    with pytest.raises(ValidationError, match=r"^mda needs n > 2f; got n=4, f=2$"):
        K.mda(x, f=2, strict=True)
    K.mda(x, f=3, strict=False)
    for f in (4, 7):
        with pytest.raises(
            ValidationError, match=rf"^mda needs n > f \(strict=False\); got n=4, f={f}$"
        ):
            K.mda(x, f=f, strict=False)
    with pytest.raises(ValidationError, match="max_subsets"):
        K.mda(torch.randn(30, 2), f=20, strict=False)  # C(30, 20) subsets: still refused


# --------------------------------------------------------------------------- bucketing(perm=)


@pytest.mark.parametrize(("dtype", "rtol"), DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_bucketing_perm_matches_reference(case: int, dtype: torch.dtype, rtol: float) -> None:
    x, xn, rng = _draw(600 + case, dtype, n_lo=1, n_hi=20, d_hi=20)
    n = x.shape[0]
    w = torch.tensor([2.0**i for i in range(n)], dtype=dtype)  # exact sums, bucket = bit mask
    for bucket_size in sorted({1, 2, 3, n, n + 1, int(rng.integers(1, n + 1))}):
        order = [int(i) for i in rng.permutation(n)]
        as_tensor = bool(rng.integers(0, 2))
        perm: Sequence[int] | torch.Tensor = torch.tensor(order) if as_tensor else order
        out, out_w = K.bucketing(x, w, bucket_size=bucket_size, perm=perm)
        exp_x, exp_w = ref.bucketing(
            xn, w.double().numpy(), bucket_size=bucket_size, permutation=order
        )
        assert out.dtype == dtype
        assert out.shape == (math.ceil(n / bucket_size), x.shape[1])
        _close(out.reshape(-1), exp_x.reshape(-1), xn, rtol)
        assert out_w is not None
        assert out_w.dtype == dtype
        assert out_w.double().tolist() == exp_w.tolist()
        no_w, none = K.bucketing(x, bucket_size=bucket_size, perm=tuple(order))
        assert none is None
        assert torch.equal(no_w, out)


def test_bucketing_perm_hand_computed() -> None:
    x = torch.tensor([[0.0], [1.0], [10.0], [11.0], [100.0]], dtype=torch.float64)
    w = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0], dtype=torch.float64)
    out, out_w = K.bucketing(x, w, bucket_size=2, perm=[0, 2, 1, 3, 4])
    assert out.tolist() == [[5.0], [6.0], [100.0]]
    assert out_w is not None
    assert out_w.tolist() == [5.0, 10.0, 16.0]
    out, out_w = K.bucketing(x, w, bucket_size=2, perm=[4, 3, 2, 1, 0])
    assert out.tolist() == [[55.5], [5.5], [0.0]]
    assert out_w is not None
    assert out_w.tolist() == [24.0, 6.0, 1.0]
    out, out_w = K.bucketing(x, w, bucket_size=3, perm=torch.tensor([1, 4, 0, 3, 2]))
    assert out.tolist() == [[101.0 / 3], [10.5]]
    assert out_w is not None
    assert out_w.tolist() == [19.0, 12.0]


@pytest.mark.parametrize("case", CASES)
def test_bucketing_perm_equals_generator_with_that_draw(case: int) -> None:
    x, _, rng = _draw(650 + case, torch.float32, n_lo=1, n_hi=20)
    n = x.shape[0]
    w = torch.rand(n, dtype=torch.float64)
    seed = int(rng.integers(0, 2**31))
    bucket_size = int(rng.integers(1, n + 1))
    drawn = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    a = K.bucketing(x, w, bucket_size=bucket_size, generator=torch.Generator().manual_seed(seed))
    b = K.bucketing(x, w, bucket_size=bucket_size, perm=drawn)
    assert torch.equal(a[0], b[0])
    assert a[1] is not None
    assert b[1] is not None
    assert torch.equal(a[1], b[1])


def test_bucketing_perm_with_generator_refused() -> None:
    with pytest.raises(ValidationError, match="perm or generator"):
        K.bucketing(torch.ones(3, 2), bucket_size=2, perm=[0, 1, 2], generator=torch.Generator())


@pytest.mark.parametrize(
    "perm",
    [
        [0, 0, 2],
        [0, 1, 3],
        [0, 1],
        [0, 1, 2, 3],
        [-1, 0, 1],
        [],
        torch.tensor([2, 2, 0]),
        torch.tensor([0, 1, 2, 3]),
    ],
    ids=lambda p: str(p.tolist() if isinstance(p, torch.Tensor) else p),
)
def test_bucketing_non_permutation_refused(perm: Sequence[int] | torch.Tensor) -> None:
    with pytest.raises(ValidationError, match=r"perm must be a permutation of range\(n\)"):
        K.bucketing(torch.ones(3, 2), bucket_size=2, perm=perm)


@pytest.mark.parametrize(
    "perm",
    [[0.5, 1, 2], [0.0, 1.0, 2.0], [True, False, 2], "012", torch.tensor([0.0, 1.0, 2.0])],
    ids=["fraction", "floats", "bools", "string", "float-tensor"],
)
def test_bucketing_non_integer_perm_refused(perm: object) -> None:
    with pytest.raises(ValidationError, match="perm"):
        K.bucketing(torch.ones(3, 2), bucket_size=2, perm=perm)  # type: ignore[arg-type]


@pytest.mark.parametrize("case", CASES)
def test_bucketing_perm_drops_nonfinite_rows_from_the_order(case: int) -> None:
    x, _, rng = _draw(700 + case, torch.float64, n_lo=4, n_hi=16)
    n = x.shape[0]
    bad = rng.choice(n, size=int(rng.integers(1, n)), replace=False)
    for k, i in enumerate(bad):
        x[i, int(rng.integers(0, x.shape[1]))] = [float("nan"), float("inf"), -float("inf")][k % 3]
    w = torch.tensor([2.0**i for i in range(n)])
    order = [int(i) for i in rng.permutation(n)]
    finite = [i for i in range(n) if i not in set(bad.tolist())]
    kept_order = [finite.index(i) for i in order if i in finite]  # positions among finite rows
    xn = x.numpy()
    for bucket_size in sorted({1, 2, 3, n}):
        out, out_w = K.bucketing(x, w, bucket_size=bucket_size, perm=order)
        exp_x, exp_w = ref.bucketing(
            xn[finite], w.numpy()[finite], bucket_size=bucket_size, permutation=kept_order
        )
        assert out.shape == (math.ceil(len(finite) / bucket_size), x.shape[1])
        _close(out.reshape(-1), exp_x.reshape(-1), xn[finite], 1e-12)
        assert out_w is not None
        assert out_w.tolist() == exp_w.tolist()


def test_bucketing_perm_nonfinite_hand_computed_and_all_bad() -> None:
    nan = float("nan")
    x = torch.tensor([[1.0], [nan], [3.0], [float("inf")], [7.0]])
    out, out_w = K.bucketing(x, torch.ones(5), bucket_size=2, perm=[3, 4, 1, 0, 2])
    # finite rows in perm order: 4, 0, 2 -> buckets (7, 1), (3)
    assert out.tolist() == [[4.0], [3.0]]
    assert out_w is not None
    assert out_w.tolist() == [2.0, 1.0]
    with pytest.raises(ValidationError):
        K.bucketing(torch.full((3, 2), nan), bucket_size=2, perm=[2, 0, 1])


# --------------------------------------------------------------------------- caf(power_iters=)


@pytest.mark.parametrize("case", range(8))
def test_caf_power_matches_reference(case: int) -> None:
    x, xn, rng = _draw(800 + case, torch.float64, n_lo=3, n_hi=11, d_hi=8 if case % 2 else 30)
    n, d = x.shape
    start = None if case % 4 < 2 else torch.tensor(rng.normal(size=d))
    start_np = None if start is None else start.numpy()
    for f in sorted({0, 1, (n - 1) // 2}):
        if 2 * f >= n:
            continue
        for iters in (1, 2, 5, 20):
            got = K.caf(x, f=f, power_iters=iters, power_start=start)
            _close(got, ref_caf_power(xn, f, iters, start_np), xn, 1e-9)


def _separated(seed: int, f: int) -> torch.Tensor:
    """Inliers stretched along one axis, outliers far out along other, orthogonal axes, all
    rotated: every filtering step has a dominant eigenvalue, and the rows already filtered out
    project near the mean on each later direction (so max τ over all rows is over the
    weighted rows, the one place where ByzPy's loop and the exact one differ)."""
    rng = np.random.default_rng(seed)
    n = 10 + 2 * f
    d = 6
    scale = np.array([1.0, 10.0, 1.0, 1.0, 1.0, 1.0])
    rows = rng.standard_normal((n, d)) * scale
    rows[:f] = rng.standard_normal((f, d)) * 0.5
    rows[:f, 1] = 0.0
    for k in range(f):
        rows[k, [0, 2][k]] = [400.0, 200.0][k]
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return torch.tensor(rows @ q.T + rng.normal(size=d))


@pytest.mark.parametrize("case", range(4))
def test_caf_many_power_iterations_agree_with_exact(case: int) -> None:
    f = 1 + case % 2
    x = _separated(900 + case, f)
    xn = x.numpy()
    exact = K.caf(x, f=f)
    assert float((exact - x.mean(dim=0)).abs().max()) > 1.0  # the filter did something
    for start in (None, torch.tensor(np.random.default_rng(case).normal(size=x.shape[1]))):
        approx = K.caf(x, f=f, power_iters=200, power_start=start)
        _close(approx, exact.numpy(), xn, 1e-9)


def test_caf_power_start_zero_falls_back_to_ones_and_scale_is_irrelevant() -> None:
    x, xn, _ = _draw(950, torch.float64, n_lo=9, n_hi=9, d_hi=5)
    d = x.shape[1]
    base = K.caf(x, f=3, power_iters=2)
    assert torch.equal(K.caf(x, f=3, power_iters=2, power_start=torch.zeros(d)), base)
    scaled = K.caf(x, f=3, power_iters=2, power_start=torch.full((d,), 7.5))
    _close(scaled, base.numpy(), xn, 1e-12)
    f32_start = K.caf(x, f=3, power_iters=2, power_start=torch.ones(d, dtype=torch.float32))
    _close(f32_start, base.numpy(), xn, 1e-12)


def test_caf_power_nonfinite_rows_count_against_f() -> None:
    x, _, rng = _draw(960, torch.float64, n_lo=9, n_hi=9, d_hi=5)
    x[4, 0] = float("nan")
    kept = np.delete(x.numpy(), 4, axis=0)
    start = torch.tensor(rng.normal(size=x.shape[1]))
    for f in (1, 2, 4):
        got = K.caf(x, f=f, power_iters=3, power_start=start)
        _close(got, ref_caf_power(kept, f - 1, 3, start.numpy()), kept, 1e-9)


def test_caf_power_float32_input() -> None:
    x, xn, _ = _draw(970, torch.float32, n_lo=8, n_hi=8, d_hi=6)
    got = K.caf(x, f=2, power_iters=4)
    assert got.dtype == torch.float32
    _close(got, ref_caf_power(xn, 2, 4, None), xn, 1e-4)


@pytest.mark.parametrize("iters", [0, -1, True, 2.0, "3"])
def test_caf_bad_power_iters_refused(iters: object) -> None:
    with pytest.raises(ValidationError, match="power_iters"):
        K.caf(torch.randn(5, 3), f=1, power_iters=iters)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "start",
    [
        torch.ones(4),
        torch.ones(2),
        torch.ones(1, 3),
        torch.ones(3, 1),
        torch.tensor(1.0),
        torch.tensor([1.0, float("nan"), 0.0]),
        torch.tensor([1.0, float("inf"), 0.0]),
        torch.tensor([1, 2, 3]),
        [1.0, 1.0, 1.0],
    ],
    ids=["d+1", "d-1", "row", "column", "scalar", "nan", "inf", "int", "list"],
)
def test_caf_bad_power_start_refused(start: object) -> None:
    with pytest.raises(ValidationError, match="power_start"):
        K.caf(torch.randn(5, 3), f=1, power_iters=3, power_start=start)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- defaults unchanged


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and torch.equal(torch.nan_to_num(a), torch.nan_to_num(b))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(3, 10),
    d=st.integers(1, 8),
    double=st.booleans(),
    bad_row=st.booleans(),
)
def test_defaults_equal_explicit_defaults(
    seed: int, n: int, d: int, double: bool, bad_row: bool
) -> None:
    rng = np.random.default_rng(seed)
    dtype = torch.float64 if double else torch.float32
    x = torch.tensor(rng.standard_normal((n, d)) * 10.0 ** rng.uniform(-2, 2), dtype=dtype)
    if bad_row:
        x[int(rng.integers(0, n)), int(rng.integers(0, d))] = float("nan")
    lo = 1 if bad_row else 0  # a NaN row counts against f
    assert _same(K.median(x), K.median(x, even="mean"))
    f = int(rng.integers(lo, (n - 1) // 2 + 1))
    assert _same(K.meamed(x, f=f), K.meamed(x, f=f, even="mean", strict=True))
    assert _same(K.mda(x, f=f), K.mda(x, f=f, strict=True))
    assert _same(K.caf(x, f=f), K.caf(x, f=f, power_iters=None, power_start=None))
    if n >= 3 + 2 * lo:
        fk = int(rng.integers(lo, (n - 3) // 2 + 1))
        for neighbors in ("n-f-2", "n-f-1"):
            kw: dict[str, Any] = {"f": fk, "neighbors": neighbors}
            assert _same(K.krum(x, **kw), K.krum(x, **kw, strict=True))
            assert _same(K.multi_krum(x, **kw), K.multi_krum(x, **kw, strict=True))
    w = torch.rand(n, dtype=dtype)
    bucket_size = int(rng.integers(1, n + 1))
    a = K.bucketing(x, w, bucket_size=bucket_size, generator=torch.Generator().manual_seed(seed))
    b = K.bucketing(
        x, w, bucket_size=bucket_size, generator=torch.Generator().manual_seed(seed), perm=None
    )
    assert _same(a[0], b[0])
    assert _same(a[1], b[1])
