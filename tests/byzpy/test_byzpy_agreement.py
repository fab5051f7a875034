"""Agreement with ByzPy 0.1.4 itself: the same class, the same arguments, the same vectors.

Every aggregator, pre-aggregator and attack of :mod:`velocity.byzpy` is run next to ByzPy's
class of the same name on random vectors (a few seeds, several (n, f), torch float64, torch
float32 and numpy float64 inputs) and must agree within ``RTOL`` times the largest |value|
(``RTOL_F32`` for float32, and for the iterative geometric median, whose stopping rule
differs slightly, see its class Notes).

ByzPy is always given float64 torch tensors (its backend is torch) holding exactly the values
ours get: for float32 runs the float32-rounded values, because ByzPy's own float32 arithmetic
is less accurate than ours (CAF's filter, for one, then takes another branch on some seeds).

Random attacks and pre-aggregators: ``Bucketing`` gets two ``random.Random`` with one seed and
must build the same buckets (both shuffle ``list(range(n))`` with it). ``GaussianAttack`` is
compared by its statistics only: ByzPy draws from ``numpy.random.default_rng(seed)``, ours from
a seeded ``torch.Generator``, and numpy's stream cannot be reproduced without reimplementing
it; both must be N(mu, sigma²) (mean and standard deviation within 5 standard errors) and
repeat themselves under a seed.
"""

from __future__ import annotations

import copy
import importlib
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("byzpy")

import velocity.byzpy.aggregators.coordinate_wise as vcw
import velocity.byzpy.aggregators.geometric_wise as vgw
import velocity.byzpy.aggregators.norm_wise as vnw
import velocity.byzpy.attacks as vat
import velocity.byzpy.pre_aggregators as vpre

bcw = importlib.import_module("byzpy.aggregators.coordinate_wise")
bgw = importlib.import_module("byzpy.aggregators.geometric_wise")
bnw = importlib.import_module("byzpy.aggregators.norm_wise")
bat = importlib.import_module("byzpy.attacks")
bpre = importlib.import_module("byzpy.pre_aggregators")

RTOL = 1e-5
RTOL_F32 = 1e-4
SEEDS = (0, 1, 2)
D = 12


def _vectors(n: int, seed: int, shape: tuple[int, ...] = (D,)) -> list[np.ndarray]:
    """n float64 vectors: an honest cloud plus two far ones (exercises the robust choices)."""
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(n, *shape))
    rows[: min(2, n // 3)] += 6.0 * rng.normal(size=shape)
    return [rows[i] for i in range(n)]


def _as(kind: str, vecs: list[np.ndarray]) -> list[Any]:
    if kind == "numpy":
        return [v.copy() for v in vecs]
    dtype = torch.float64 if kind == "float64" else torch.float32
    return [torch.tensor(v, dtype=dtype) for v in vecs]


def _reference(kind: str, vecs: list[np.ndarray]) -> list[Any]:
    """ByzPy's inputs: float64 torch tensors of the very values ours get (float32-rounded for
    float32 runs: ByzPy's own float32 arithmetic is less accurate than ours, and CAF's filter,
    for one, can then take another branch)."""
    return [t.double() for t in _as("float32" if kind == "float32" else "float64", vecs)]


def _np(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def _close(ours: Any, theirs: Any, rtol: float) -> None:
    a, b = _np(ours), _np(theirs)
    assert a.shape == b.shape
    scale = max(1.0, float(np.max(np.abs(b))) if b.size else 1.0)
    np.testing.assert_allclose(a, b, rtol=0.0, atol=rtol * scale)


def _check_types(ours: Any, kind: str, like: Any) -> None:
    if kind == "numpy":
        assert isinstance(ours, np.ndarray)
        assert ours.dtype == np.float64
    else:
        assert isinstance(ours, torch.Tensor)
        assert ours.dtype == like.dtype
    assert tuple(ours.shape) == tuple(like.shape)


# (id, velocity factory, byzpy factory, [(n, f)], rtol scale) — factories take f.
Factory = Callable[[int], Any]
AGGREGATORS: list[tuple[str, Factory, Factory, list[tuple[int, int]], float]] = [
    ("median", lambda f: vcw.CoordinateWiseMedian(), lambda f: bcw.CoordinateWiseMedian(),
     [(7, 0), (8, 0), (2, 0)], RTOL),
    ("trimmed_mean", lambda f: vcw.CoordinateWiseTrimmedMean(f),
     lambda f: bcw.CoordinateWiseTrimmedMean(f), [(7, 2), (8, 3), (5, 0)], RTOL),
    ("meamed", lambda f: vcw.MeanOfMedians(f), lambda f: bcw.MeanOfMedians(f),
     [(7, 2), (8, 3), (5, 3), (6, 0)], RTOL),
    ("krum", lambda f: vgw.Krum(f), lambda f: bgw.Krum(f), [(7, 2), (9, 2), (5, 3)], RTOL),
    ("multikrum_q2", lambda f: vgw.MultiKrum(f, 2), lambda f: bgw.MultiKrum(f, 2),
     [(7, 2), (10, 3), (5, 3)], RTOL),
    ("multikrum_qmax", lambda f: vgw.MultiKrum(f, 10 - f), lambda f: bgw.MultiKrum(f, 10 - f),
     [(10, 2), (10, 4)], RTOL),
    ("geometric_median", lambda f: vgw.GeometricMedian(), lambda f: bgw.GeometricMedian(),
     [(7, 0), (8, 0)], 1e-4),
    ("geometric_median_mean", lambda f: vgw.GeometricMedian(init="mean", tol=1e-9),
     lambda f: bgw.GeometricMedian(init="mean", tol=1e-9), [(9, 0)], 1e-5),
    ("mda", lambda f: vgw.MinimumDiameterAveraging(f), lambda f: bgw.MinimumDiameterAveraging(f),
     [(7, 2), (8, 3), (6, 4)], RTOL),
    ("monna", lambda f: vgw.MoNNA(f), lambda f: bgw.MoNNA(f), [(7, 2), (9, 4)], RTOL),
    ("monna_ref", lambda f: vgw.MoNNA(f, reference_index=3),
     lambda f: bgw.MoNNA(f, reference_index=3), [(8, 2)], RTOL),
    ("smea", lambda f: vgw.SMEA(f), lambda f: bgw.SMEA(f), [(7, 2), (8, 1)], RTOL),
    ("cc_mean", lambda f: vnw.CenteredClipping(c_tau=1.0),
     lambda f: bnw.CenteredClipping(c_tau=1.0), [(7, 0), (8, 0)], RTOL),
    ("cc_median", lambda f: vnw.CenteredClipping(c_tau=2.0, M=5, init="median"),
     lambda f: bnw.CenteredClipping(c_tau=2.0, M=5, init="median"), [(7, 0), (8, 0)], RTOL),
    ("cc_zero", lambda f: vnw.CenteredClipping(c_tau=0.5, M=20, init="zero"),
     lambda f: bnw.CenteredClipping(c_tau=0.5, M=20, init="zero"), [(6, 0)], RTOL),
    ("cge", lambda f: vnw.ComparativeGradientElimination(f),
     lambda f: bnw.ComparativeGradientElimination(f), [(7, 2), (6, 5)], RTOL),
    ("caf", lambda f: vnw.CAF(f), lambda f: bnw.CAF(f), [(7, 2), (9, 4), (8, 0)], RTOL),
    ("caf_1iter", lambda f: vnw.CAF(f, power_iters=1), lambda f: bnw.CAF(f, power_iters=1),
     [(9, 3)], RTOL),
]  # fmt: skip

PRE_AGGREGATORS: list[tuple[str, Factory, Factory, list[tuple[int, int]], float]] = [
    ("clipping", lambda f: vpre.Clipping(threshold=3.0), lambda f: bpre.Clipping(threshold=3.0),
     [(6, 0)], RTOL),
    ("clipping_default", lambda f: vpre.Clipping(), lambda f: bpre.Clipping(), [(5, 0)], RTOL),
    ("arc", lambda f: vpre.ARC(f), lambda f: bpre.ARC(f), [(7, 2), (10, 3), (6, 0), (4, 4)], RTOL),
    ("nnm", lambda f: vpre.NearestNeighborMixing(f), lambda f: bpre.NearestNeighborMixing(f),
     [(7, 2), (8, 0), (6, 5)], RTOL),
    ("bucketing_perm", lambda f: vpre.Bucketing(3, perm=[4, 2, 0, 1, 3, 6, 5]),
     lambda f: bpre.Bucketing(3, perm=[4, 2, 0, 1, 3, 6, 5]), [(7, 0)], RTOL),
]  # fmt: skip

KINDS = ("float64", "float32", "numpy")


def _rtol(kind: str, rtol: float) -> float:
    return max(rtol, RTOL_F32) if kind == "float32" else rtol


def _cases(table: list[tuple[str, Factory, Factory, list[tuple[int, int]], float]]) -> list[Any]:
    return [
        pytest.param(ours, theirs, n, f, rtol, id=f"{name}-n{n}-f{f}")
        for name, ours, theirs, combos, rtol in table
        for n, f in combos
    ]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("ours", "theirs", "n", "f", "rtol"), _cases(AGGREGATORS))
def test_aggregators_agree(
    ours: Factory, theirs: Factory, n: int, f: int, rtol: float, kind: str
) -> None:
    for seed in SEEDS:
        vecs = _vectors(n, seed)
        inputs = _as(kind, vecs)
        got = ours(f).aggregate(inputs)
        _check_types(got, kind, inputs[0])
        expected = theirs(f).aggregate(_reference(kind, vecs))
        _close(got, expected, _rtol(kind, rtol))


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (vcw.CoordinateWiseMedian(), bcw.CoordinateWiseMedian()),
        (vcw.MeanOfMedians(2), bcw.MeanOfMedians(2)),
        (vgw.MultiKrum(2, 3), bgw.MultiKrum(2, 3)),
        (vnw.CAF(2), bnw.CAF(2)),
        (vnw.CenteredClipping(c_tau=1.0, init="median"),
         bnw.CenteredClipping(c_tau=1.0, init="median")),
    ],
    ids=["median", "meamed", "multikrum", "caf", "cc"],
)  # fmt: skip
def test_aggregators_agree_on_matrix_gradients(ours: Any, theirs: Any) -> None:
    vecs = _vectors(8, 5, shape=(3, 4))
    got = ours.aggregate(_as("float64", vecs))
    assert got.shape == (3, 4)
    _close(got, theirs.aggregate(_as("float64", vecs)), RTOL)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("ours", "theirs", "n", "f", "rtol"), _cases(PRE_AGGREGATORS))
def test_pre_aggregators_agree(
    ours: Factory, theirs: Factory, n: int, f: int, rtol: float, kind: str
) -> None:
    for seed in SEEDS:
        vecs = _vectors(n, seed)
        inputs = _as(kind, vecs)
        got = ours(f).pre_aggregate(inputs)
        expected = theirs(f).pre_aggregate(_reference(kind, vecs))
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            _check_types(g, kind, inputs[0])
            _close(g, e, _rtol(kind, rtol))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("n", "bucket_size"), [(10, 4), (9, 3), (5, 1), (4, 7)])
def test_bucketing_same_rng_state_same_buckets(n: int, bucket_size: int, kind: str) -> None:
    for seed in SEEDS:
        vecs = _vectors(n, seed)
        ours = vpre.Bucketing(bucket_size, rng=random.Random(seed))
        theirs = bpre.Bucketing(bucket_size, rng=random.Random(seed))
        for _ in range(2):  # the generators advance alike from call to call
            got = ours.pre_aggregate(_as(kind, vecs))
            expected = theirs.pre_aggregate(_reference(kind, vecs))
            assert len(got) == len(expected) == -(-n // bucket_size)
            for g, e in zip(got, expected, strict=True):
                _close(g, e, _rtol(kind, RTOL))


# --------------------------------------------------------------------------- attacks
HONEST_ATTACKS: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
    ("empire", lambda: vat.EmpireAttack(), lambda: bat.EmpireAttack()),
    ("empire_scale", lambda: vat.EmpireAttack(scale=2.5), lambda: bat.EmpireAttack(scale=2.5)),
    ("little", lambda: vat.LittleAttack(f=2), lambda: bat.LittleAttack(f=2)),
    ("little_N", lambda: vat.LittleAttack(f=3, N=20), lambda: bat.LittleAttack(f=3, N=20)),
    ("little_f0", lambda: vat.LittleAttack(f=0), lambda: bat.LittleAttack(f=0)),
    ("little_big_f", lambda: vat.LittleAttack(f=9), lambda: bat.LittleAttack(f=9)),
    ("mimic", lambda: vat.MimicAttack(), lambda: bat.MimicAttack()),
    ("mimic_2", lambda: vat.MimicAttack(epsilon=2), lambda: bat.MimicAttack(epsilon=2)),
    ("inf", lambda: vat.InfAttack(), lambda: bat.InfAttack()),
]


def _close_or_inf(ours: Any, theirs: Any, rtol: float) -> None:
    a, b = _np(ours), _np(theirs)
    if np.isinf(b).all():
        assert np.isposinf(a).all()
        assert a.shape == b.shape
    else:
        # ours carry float32 precision (velocity.attacks crafts float32 rows)
        _close(ours, theirs, max(rtol, 1e-6))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("h", [1, 4, 7])
@pytest.mark.parametrize(
    ("ours", "theirs"), [pytest.param(o, t, id=i) for i, o, t in HONEST_ATTACKS]
)
def test_honest_grad_attacks_agree(
    ours: Callable[[], Any], theirs: Callable[[], Any], h: int, kind: str
) -> None:
    if getattr(ours(), "epsilon", 0) >= h:
        pytest.skip("epsilon must index an honest gradient")
    for seed in SEEDS:
        vecs = _vectors(h, seed, shape=(3, 4))
        inputs = _as(kind, vecs)
        attack = ours()
        got = attack.apply(honest_grads=inputs)
        _check_types(got, kind, inputs[0])
        expected = theirs().apply(honest_grads=_reference(kind, vecs))
        _close_or_inf(got, expected, _rtol(kind, RTOL))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scale", [-1.0, 3.0])
def test_sign_flip_agrees(scale: float, kind: str) -> None:
    vec = _vectors(1, 3, shape=(3, 4))
    got = vat.SignFlipAttack(scale=scale).apply(base_grad=_as(kind, vec)[0])
    _check_types(got, kind, _as(kind, vec)[0])
    expected = bat.SignFlipAttack(scale=scale).apply(base_grad=_reference(kind, vec)[0])
    _close(got, expected, _rtol(kind, 1e-6))


@pytest.mark.parametrize(("mu", "sigma"), [(0.0, 1.0), (2.0, 0.5)])
def test_gaussian_same_distribution(mu: float, sigma: float) -> None:
    grads = [torch.zeros(20_000, dtype=torch.float64)]
    ours = vat.GaussianAttack(mu=mu, sigma=sigma, seed=11)
    theirs = bat.GaussianAttack(mu=mu, sigma=sigma, seed=11)
    for draw in (ours.apply(honest_grads=grads), theirs.apply(honest_grads=grads)):
        x = _np(draw)
        se = sigma / np.sqrt(x.size)
        assert abs(x.mean() - mu) < 5 * se
        assert abs(x.std() - sigma) < 5 * se * np.sqrt(2)
    # both repeat themselves under a seed
    assert torch.equal(ours.apply(honest_grads=grads), ours.apply(honest_grads=grads))
    assert torch.equal(theirs.apply(honest_grads=grads), theirs.apply(honest_grads=grads))


@pytest.mark.parametrize(
    "kwargs",
    [{"num_classes": 3}, {"mapping": {0: 2, 2: 0}}, {"num_classes": 3, "scale": -2.0}],
    ids=["mirror", "mapping", "scaled"],
)
def test_label_flip_agrees(kwargs: dict[str, Any]) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    x = torch.randn(16, 5)
    y = torch.randint(0, 3, (16,))
    twin = copy.deepcopy(model)
    got = vat.LabelFlipAttack(**kwargs).apply(model=model, x=x, y=y)
    expected = bat.LabelFlipAttack(**kwargs).apply(model=twin, x=x, y=y)
    _close(got, expected, 1e-6)
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())
