"""velocity.metrics against brute-force Python references, published values and properties."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import velocity.metrics as vm
from velocity.errors import ConfigurationError, ValidationError
from velocity.metrics import (
    cosine_similarity,
    fairness_summary,
    gini,
    update_divergence,
    weight_divergence,
)

FEW = settings(max_examples=60, deadline=None)

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
nonnegative = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)


def matrices(n: int = 6, d: int = 5) -> st.SearchStrategy[list[list[float]]]:
    return st.lists(st.lists(finite, min_size=d, max_size=d), min_size=1, max_size=n)


# ------------------------------------------------------------------ brute-force references


def ref_norm(v: list[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in v))


def ref_divergence(rows: list[list[float]], g: list[float]) -> list[float]:
    scale = ref_norm(g)
    out = []
    for row in rows:
        dist = ref_norm([a - b for a, b in zip(row, g, strict=True)])
        out.append(dist if scale == 0 else dist / scale)
    return out


def ref_cosine(rows: list[list[float]], r: list[float]) -> list[float]:
    out = []
    for row in rows:
        # hypot: no underflow of the squares (the kernel normalises, so a row of 4e-219
        # has a direction)
        na, nb = math.hypot(*row), math.hypot(*r)
        if na == 0 or nb == 0:
            out.append(0.0)
        else:
            # normalise first: a product of tiny entries would underflow to 0
            dot = math.fsum((a / na) * (b / nb) for a, b in zip(row, r, strict=True))
            out.append(max(-1.0, min(1.0, dot)))
    return out


def ref_gini(values: list[float]) -> float:
    n = len(values)
    total = math.fsum(values)
    if total == 0:
        return 0.0
    pairs = math.fsum(abs(a - b) for a, b in itertools.product(values, repeat=2))
    return pairs / (2 * n * n * (total / n))


def t64(rows: Any) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# ------------------------------------------------------------------ surface


def test_exported_members() -> None:
    public = {name for name in dir(vm) if not name.startswith("_")}
    assert sorted(vm.__all__) == sorted(public)


# ------------------------------------------------------------------ divergence


@FEW
@given(rows=matrices(), g=st.lists(finite, min_size=5, max_size=5))
def test_weight_divergence_matches_the_reference(rows: list[list[float]], g: list[float]) -> None:
    got = weight_divergence(t64(rows), t64(g))
    assert got.dtype == torch.float64
    assert got.shape == (len(rows),)
    np.testing.assert_allclose(got.numpy(), ref_divergence(rows, g), rtol=1e-12, atol=1e-300)


@FEW
@given(rows=matrices(), agg=st.lists(finite, min_size=5, max_size=5))
def test_update_divergence_matches_the_reference(rows: list[list[float]], agg: list[float]) -> None:
    got = update_divergence(t64(rows), t64(agg))
    np.testing.assert_allclose(got.numpy(), ref_divergence(rows, agg), rtol=1e-12, atol=1e-300)


def test_divergence_hand_values_and_conventions() -> None:
    g = torch.tensor([3.0, 4.0])
    assert weight_divergence(torch.tensor([[3.0, 4.0], [6.0, 8.0]]), g).tolist() == [0.0, 1.0]
    one = weight_divergence(torch.tensor([0.0, 4.0]), g)
    assert one.shape == ()
    assert one.item() == pytest.approx(0.6)
    # a zero global model: the absolute distance
    assert weight_divergence(torch.tensor([[3.0, 4.0], [0.0, 0.0]]), torch.zeros(2)).tolist() == [
        5.0,
        0.0,
    ]
    assert update_divergence(torch.tensor([[1.0, 0.0]]), torch.zeros(2)).tolist() == [1.0]
    # float32 input is measured in float64
    x32 = torch.tensor([[1.0, 2.0]], dtype=torch.float32)
    assert weight_divergence(x32, torch.tensor([1.0, 1.0], dtype=torch.float32)).dtype == (
        torch.float64
    )
    # non-finite rows propagate
    bad = weight_divergence(torch.tensor([[math.inf, 0.0], [math.nan, 0.0], [3.0, 4.0]]), g)
    assert math.isinf(bad[0])
    assert math.isnan(bad[1])
    assert bad[2] == 0.0


@FEW
@given(rows=matrices(), g=st.lists(finite, min_size=5, max_size=5), c=st.floats(0.01, 100))
def test_weight_divergence_is_scale_invariant(
    rows: list[list[float]], g: list[float], c: float
) -> None:
    """WD(c·w_k, c·w_g) = WD(w_k, w_g) when w_g ≠ 0: a relative measure."""
    if ref_norm(g) == 0:
        return
    a = weight_divergence(t64(rows), t64(g))
    b = weight_divergence(c * t64(rows), c * t64(g))
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ cosine


@FEW
@given(rows=matrices(), r=st.lists(finite, min_size=5, max_size=5))
def test_cosine_matches_the_reference_and_stays_in_range(
    rows: list[list[float]], r: list[float]
) -> None:
    got = cosine_similarity(t64(rows), t64(r))
    assert bool(((got >= -1) & (got <= 1)).all())
    np.testing.assert_allclose(got.numpy(), ref_cosine(rows, r), rtol=1e-9, atol=1e-12)


def test_cosine_conventions() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 0.0], [2.0, 2.0], [math.nan, 1.0], [math.inf, 0.0]])
    got = cosine_similarity(x, torch.tensor([5.0, 0.0]))
    assert got[:2].tolist() == [1.0, 0.0]
    assert got[2].item() == pytest.approx(1 / math.sqrt(2), rel=1e-15)
    assert math.isnan(got[3])
    assert math.isnan(got[4])
    assert cosine_similarity(x[:3], torch.zeros(2)).tolist() == [0.0, 0.0, 0.0]
    assert bool(torch.isnan(cosine_similarity(x[:3], torch.tensor([math.nan, 0.0]))).all())
    # parallel and antiparallel rows give ±1 even where the norms would overflow or underflow
    big = torch.tensor([[1e300, 1e300], [-3e-300, -3e-300]], dtype=torch.float64)
    got = cosine_similarity(big, torch.tensor([1.0, 1.0], dtype=torch.float64))
    assert got.tolist() == pytest.approx([1.0, -1.0], rel=1e-15)
    assert cosine_similarity(torch.tensor([0.0, 3.0]), torch.tensor([0.0, 1.0])).shape == ()


@FEW
@given(rows=matrices(), r=st.lists(finite, min_size=5, max_size=5), c=st.floats(0.01, 100))
def test_cosine_ignores_positive_scale(rows: list[list[float]], r: list[float], c: float) -> None:
    a = cosine_similarity(t64(rows), t64(r))
    b = cosine_similarity(c * t64(rows), t64(r) / c)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("fn", [weight_divergence, update_divergence, cosine_similarity])
def test_vector_functions_refuse_bad_shapes_and_types(fn: Any) -> None:
    x, r = torch.ones(3, 4), torch.ones(4)
    for rows, ref in [
        (x, torch.ones(5)),
        (x, torch.ones(1, 4)),
        (x, torch.ones(0)),
        (torch.ones(3, 5), r),
        (torch.ones(2, 3, 4), r),
        (torch.ones(0, 4), r),
        (x.long(), r),
        (x, r.long()),
        (x.numpy(), r),
        (x, [1.0] * 4),
    ]:
        with pytest.raises(ValidationError, match=fn.__name__):
            fn(rows, ref)


def test_inputs_are_not_modified() -> None:
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    r = torch.randn(3, generator=torch.Generator().manual_seed(1))
    before = (x.clone(), r.clone())
    weight_divergence(x, r)
    update_divergence(x, r)
    cosine_similarity(x, r)
    assert torch.equal(x, before[0])
    assert torch.equal(r, before[1])


# ------------------------------------------------------------------ gini


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, 1, 1, 1], 0.0),
        ([0, 0, 0, 1], 0.75),
        ([0, 0, 0, 0], 0.0),
        ([5], 0.0),
        ([1, 2, 3, 4, 5], 4 / 15),  # Σ|xi − xj| = 40, 2 n² μ = 150
        ([0, 1], 0.5),
        ([2, 2, 4], 1 / 6),  # Σ|xi − xj| = 8, 2 n² μ = 48
    ],
)
def test_gini_hand_values(values: list[float], expected: float) -> None:
    assert gini(values) == pytest.approx(expected, rel=1e-15)
    assert gini(values) == pytest.approx(ref_gini([float(v) for v in values]), rel=1e-15)


def test_gini_sample_correction() -> None:
    assert gini([0, 0, 0, 1], sample=True) == pytest.approx(1.0)
    assert gini([1, 2, 3, 4, 5], sample=True) == pytest.approx(4 / 15 * 5 / 4)
    with pytest.raises(ValidationError, match="at least 2 values"):
        gini([3.0], sample=True)
    with pytest.raises(ConfigurationError, match=r"gini\.sample must be"):
        gini([1.0], sample=1)  # type: ignore[arg-type]


@FEW
@given(values=st.lists(nonnegative, min_size=1, max_size=40))
def test_gini_matches_the_quadratic_definition(values: list[float]) -> None:
    got = gini(values)
    assert got == pytest.approx(ref_gini(values), rel=1e-9, abs=1e-12)
    assert 0.0 <= got <= 1.0 - 1.0 / len(values) + 1e-12


@FEW
@given(values=st.lists(nonnegative, min_size=1, max_size=30), c=st.floats(1e-3, 1e3))
def test_gini_is_scale_and_order_invariant(values: list[float], c: float) -> None:
    base = gini(values)
    assert gini([c * v for v in values]) == pytest.approx(base, rel=1e-9, abs=1e-12)
    assert gini(list(reversed(values))) == pytest.approx(base, rel=1e-12, abs=1e-15)


def test_gini_accepts_tensors_arrays_and_mappings() -> None:
    expected = gini([0.0, 1.0, 3.0])
    assert gini(torch.tensor([3.0, 0.0, 1.0])) == expected
    assert gini(np.array([1, 3, 0])) == expected
    assert gini({"a": 1.0, "b": 0.0, "c": 3.0}) == expected


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ([], "empty"),
        ([1.0, -0.5], r"entries \[1\] are negative"),
        ([1.0, math.nan], r"entries \[1\] are NaN"),
        ([math.inf], r"entries \[0\] are NaN or ±inf"),
        (["1"], "real numbers"),
        ([True], "real numbers"),
        (torch.ones(2, 2), "1-D"),
        (np.array(["a"]), "1-D real array"),
        ("abc", "tensor, array, sequence or mapping"),
    ],
)
def test_gini_refusals(values: Any, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        gini(values)


# ------------------------------------------------------------------ fairness_summary


def test_fairness_summary_hand_values() -> None:
    acc = {f"c{i}": v for i, v in enumerate([0.2, 0.4, 0.6, 0.8, 1.0, 0.9, 0.7, 0.5, 0.3, 0.1])}
    s = fairness_summary(acc)
    assert list(s) == ["mean", "std", "min", "max", "worst_10pct", "best_10pct", "gini", "n"]
    values = sorted(acc.values())
    assert s["mean"] == pytest.approx(0.55)
    assert s["std"] == pytest.approx(float(np.std(values)))
    assert (s["min"], s["max"], s["n"]) == (0.1, 1.0, 10.0)
    assert s["worst_10pct"] == 0.1
    assert s["best_10pct"] == 1.0
    assert s["gini"] == pytest.approx(ref_gini(values))
    wide = fairness_summary(acc, tail=0.25)  # ceil(2.5) = 3 clients per tail
    assert wide["worst_10pct"] == pytest.approx(0.2)
    assert wide["best_10pct"] == pytest.approx(0.9)
    one = fairness_summary({"only": 0.7})
    assert (one["worst_10pct"], one["best_10pct"], one["std"], one["gini"]) == (0.7, 0.7, 0, 0)


@FEW
@given(values=st.lists(st.floats(0, 1), min_size=1, max_size=50), tail=st.floats(0.01, 1.0))
def test_fairness_summary_properties(values: list[float], tail: float) -> None:
    s = fairness_summary({str(i): v for i, v in enumerate(values)}, tail=tail)
    # the tail means are sums divided by counts: within rounding of the extremes
    assert s["min"] - 1e-12 <= s["worst_10pct"] <= s["mean"] + 1e-12
    assert s["mean"] - 1e-12 <= s["best_10pct"] <= s["max"] + 1e-12
    assert s["std"] == pytest.approx(float(np.std(values)), abs=1e-12)
    t = max(1, math.ceil(tail * len(values)))
    assert s["worst_10pct"] == pytest.approx(math.fsum(sorted(values)[:t]) / t)


def test_fairness_summary_refusals() -> None:
    with pytest.raises(ValidationError, match="mapping of client id"):
        fairness_summary([0.5, 0.6])  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="empty"):
        fairness_summary({})
    with pytest.raises(ValidationError, match="negative"):
        fairness_summary({"a": -1.0})
    with pytest.raises(ConfigurationError, match=r"fairness_summary\.tail must be"):
        fairness_summary({"a": 1.0}, tail=0.0)
