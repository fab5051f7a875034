"""Robustness: f Byzantine rows (1e6, +inf, -inf, NaN) against n - f honest rows.

Honest rows are drawn around a common vector; let h̄ be their mean and
R = max_i ‖h_i − h̄‖ their radius. Every robust rule runs at the largest f it accepts for
n = 11 and must return a finite vector within the bound stated for it below (a guarantee that
follows from the rule's definition for identical Byzantine rows, not a fitted number):

* coordinate-wise rules (median, trimmed mean, MeaMed, Bulyan): every coordinate inside the
  honest rows' [min, max] for that coordinate;
* rules that keep n − f rows chosen by distance, norm or diameter (Multi-Krum with m = n − f,
  MDA, SMEA, MoNNA from an honest reference row, CGE): exactly h̄ (the chosen rows are the
  honest ones);
* Krum: one of the honest rows (so within R);
* CAF: a convex combination of honest rows (within R) — identical Byzantine rows share the
  largest projection and are zeroed in the first step, non-finite ones start at weight 0;
* geometric median: within R·n/(n − 2f) (optimality condition of the geometric median with
  n − f points within R of h̄), and within R once non-finite rows are dropped;
* centered clipping (init="median", c_tau chosen so honest rows are never clipped):
  ‖v − h̄‖ ≤ f·c_tau/(n − f) + (f/n)^M·E0 with E0 the distance of the start from h̄.

Non-finite Byzantine rows (+inf, -inf, NaN) go to every rule: by the non-finite-row policy
(docs/kernels.md) they are dropped and count against f, so the rule runs on the n − f honest
rows with f' = 0 and every bound above holds with the honest rows alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from velocity import kernels as K
from velocity.errors import ValidationError

N, D = 11, 10
KINDS = {"big": 1e6, "+inf": math.inf, "-inf": -math.inf, "nan": math.nan}
DTYPES = [torch.float64, torch.float32]


@dataclass(frozen=True)
class Scenario:
    x: torch.Tensor  # (N, D): honest rows first, then the f Byzantine rows
    honest: torch.Tensor
    f: int

    @property
    def center(self) -> torch.Tensor:
        return self.honest.mean(dim=0)

    @property
    def radius(self) -> float:
        return float(torch.linalg.vector_norm(self.honest - self.center, dim=1).max())


def scenario(f: int, kind: str, dtype: torch.dtype, seed: int = 0) -> Scenario:
    g = torch.Generator().manual_seed(seed)
    common = torch.randn(D, generator=g, dtype=torch.float64) * 2.0
    honest = common + 0.1 * torch.randn(N - f, D, generator=g, dtype=torch.float64)
    byz = torch.full((f, D), KINDS[kind], dtype=torch.float64)
    x = torch.cat([honest, byz]).to(dtype)
    return Scenario(x=x, honest=x[: N - f].double(), f=f)


def _dist(out: torch.Tensor, s: Scenario) -> float:
    return float(torch.linalg.vector_norm(out.double() - s.center))


def _tol(dtype: torch.dtype) -> float:
    return 1e-9 if dtype == torch.float64 else 2e-5


# ---------------------------------------------------------------- per-rule expectations

Check = Callable[[torch.Tensor, Scenario, torch.dtype], None]


def in_box(out: torch.Tensor, s: Scenario, dtype: torch.dtype) -> None:
    lo, hi = s.honest.min(dim=0).values, s.honest.max(dim=0).values
    slack = _tol(dtype) * float(s.honest.abs().max())
    o = out.double()
    assert bool(((o >= lo - slack) & (o <= hi + slack)).all()), (o - lo, hi - o)


def is_honest_mean(out: torch.Tensor, s: Scenario, dtype: torch.dtype) -> None:
    assert _dist(out, s) <= _tol(dtype) * float(s.honest.abs().max()) * math.sqrt(D)


def is_honest_row(out: torch.Tensor, s: Scenario, dtype: torch.dtype) -> None:
    assert any(torch.equal(out.double(), row) for row in s.honest)


def within(factor: Callable[[Scenario], float]) -> Check:
    def check(out: torch.Tensor, s: Scenario, dtype: torch.dtype) -> None:
        bound = factor(s) * s.radius + _tol(dtype) * float(s.honest.abs().max()) * math.sqrt(D)
        assert _dist(out, s) <= bound, f"{_dist(out, s):.4g} > {bound:.4g}"

    return check


def gm_factor(s: Scenario) -> float:
    if not bool(torch.isfinite(s.x).all()):
        return 1.0  # non-finite rows are left out: the geometric median of the honest rows
    return N / (N - 2 * s.f)


@dataclass(frozen=True)
class Robust:
    name: str
    f: int  # the largest f the rule accepts for N rows
    call: Callable[[torch.Tensor, int], torch.Tensor]
    check: Check


def _kw(name: str, **settings: Any) -> Callable[[torch.Tensor, int], torch.Tensor]:
    return lambda x, f: getattr(K, name)(x, f=f, **settings)


ROBUST = [
    Robust("median", 5, lambda x, f: K.median(x), in_box),
    Robust("trimmed_mean", 5, _kw("trimmed_mean"), in_box),
    Robust("meamed", 5, _kw("meamed"), in_box),
    Robust("bulyan", 2, _kw("bulyan"), in_box),
    Robust("bulyan-nf1", 2, _kw("bulyan", neighbors="n-f-1"), in_box),
    Robust("krum", 4, _kw("krum"), is_honest_row),
    Robust("krum-nf1", 4, _kw("krum", neighbors="n-f-1"), is_honest_row),
    Robust("multi_krum", 4, _kw("multi_krum"), is_honest_mean),
    Robust("mda", 5, _kw("mda"), is_honest_mean),
    Robust("smea", 5, _kw("smea"), is_honest_mean),
    Robust("monna", 5, _kw("monna", reference_index=2), is_honest_mean),
    Robust("cge", 5, _kw("cge"), is_honest_mean),
    Robust("caf", 5, _kw("caf"), within(lambda s: 1.0)),
    Robust("geometric_median", 5, lambda x, f: K.geometric_median(x), within(gm_factor)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("rule", ROBUST, ids=lambda r: r.name)
def test_robust_rule_stays_with_the_honest_rows(
    rule: Robust, kind: str, dtype: torch.dtype
) -> None:
    s = scenario(rule.f, kind, dtype)
    out = rule.call(s.x, rule.f)
    assert out.dtype == dtype
    assert bool(torch.isfinite(out).all()), out
    rule.check(out, s, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", list(KINDS))
def test_centered_clipping_bound(kind: str, dtype: torch.dtype) -> None:
    f, M = 5, 10
    s = scenario(f, kind, dtype)
    finite = torch.isfinite(s.x).all(dim=1)
    # the start is the median of the finite rows (non-finite rows are dropped first)
    e0 = float(torch.linalg.vector_norm(K.median(s.x[finite]).double() - s.center))
    r = s.radius
    # honest rows stay unclipped when c_tau >= R + e_t for all t (see module docstring)
    c_tau = max(r + e0, r * (N - f) / (N - 2 * f)) * 1.01
    out = K.centered_clipping(s.x, c_tau=c_tau, M=M, init="median")
    assert bool(torch.isfinite(out).all())
    byz_pull = f * c_tau / (N - f) if kind == "big" else 0.0  # non-finite rows are dropped
    bound = byz_pull + (f / N) ** M * e0 + _tol(dtype) * float(s.honest.abs().max()) * D
    assert _dist(out, s) <= bound, f"{_dist(out, s):.4g} > {bound:.4g}"


# ---------------------------------------------------------------- pre-aggregators


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", list(KINDS))
def test_nnm_mixes_honest_rows_among_themselves(kind: str, dtype: torch.dtype) -> None:
    """Each honest row's n − f nearest rows are exactly the honest rows: it becomes h̄.
    Non-finite Byzantine rows are dropped (the output has the n − f honest rows only)."""
    f = 5
    s = scenario(f, kind, dtype)
    out, _ = K.nnm(s.x, f=f)
    assert out.shape[0] == (N if kind == "big" else N - f)
    for row in out[: N - f]:
        is_honest_mean(row, s, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", list(KINDS))
def test_arc_clips_byzantine_rows_to_the_largest_honest_norm(kind: str, dtype: torch.dtype) -> None:
    f = 5  # k = floor(2·5·6/11) = 5 >= f: every Byzantine row is clipped
    s = scenario(f, kind, dtype)
    out, _ = K.arc(s.x, f=f)
    assert out.shape[0] == (N if kind == "big" else N - f)  # non-finite rows are dropped
    assert bool(torch.isfinite(out).all()), out
    honest_norms = torch.linalg.vector_norm(s.honest, dim=1)
    out_norms = torch.linalg.vector_norm(out.double(), dim=1)
    assert bool((out_norms <= honest_norms.max() * (1 + _tol(dtype))).all())
    assert torch.equal(out[: N - f], s.x[: N - f])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", list(KINDS))
def test_clip_bounds_byzantine_rows(kind: str, dtype: torch.dtype) -> None:
    s = scenario(3, kind, dtype)
    threshold = float(torch.linalg.vector_norm(s.honest, dim=1).max()) * 1.5
    out, _ = K.clip(s.x, threshold=threshold)
    assert bool(torch.isfinite(out).all()), out
    norms = torch.linalg.vector_norm(out.double(), dim=1)
    assert bool((norms <= threshold * (1 + _tol(dtype))).all())
    assert torch.equal(out[: N - 3], s.x[: N - 3])  # honest rows are under the threshold
    if kind != "big":  # non-finite rows are dropped, not clipped
        assert out.shape[0] == N - 3
        return
    # the Byzantine rows keep their direction: all coordinates equal, with the attack's sign
    assert out.shape[0] == N
    for row in out[N - 3 :].double():
        torch.testing.assert_close(row, torch.full_like(row, threshold / math.sqrt(D)))


# ---------------------------------------------------------------- mean and non-finite rows


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["+inf", "-inf", "nan"])
def test_mean_drops_exactly_the_nonfinite_rows(kind: str, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, D, generator=g, dtype=torch.float64).to(dtype)
    bad_rows = [1, 4, 9]
    for i, j in zip(bad_rows, [0, 5, 9], strict=True):
        x[i, j] = KINDS[kind]  # a single bad entry is enough to drop the row
    w = torch.rand(N, generator=g, dtype=torch.float64).to(dtype) + 0.5
    mask = K.nonfinite_rows(x)
    assert mask.dtype == torch.bool
    assert torch.nonzero(mask).flatten().tolist() == bad_rows
    keep = ~mask
    tol = _tol(dtype) * 10
    torch.testing.assert_close(K.mean(x), x[keep].mean(dim=0), rtol=tol, atol=tol)
    expected = (w[keep, None].double() * x[keep].double()).sum(0) / w[keep].double().sum()
    torch.testing.assert_close(K.mean(x, weights=w).double(), expected, rtol=tol, atol=tol)
    assert not bool(torch.isfinite(K.mean(x, nonfinite="propagate")).all())
    with pytest.raises(ValidationError) as info:
        K.mean(x, nonfinite="raise")
    assert re.search(r"\b1\b.*\b4\b.*\b9\b", str(info.value)), str(info.value)


def test_nonfinite_rows_finds_single_entries_and_overflow_sums() -> None:
    x = torch.zeros(4, 3)
    x[1, 2] = math.nan
    x[3, 0] = -math.inf
    x[2] = 3e38  # finite entries whose sum overflows float32: still a finite row
    assert K.nonfinite_rows(x).tolist() == [False, True, False, True]
