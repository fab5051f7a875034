"""velocity.byzpy aggregators: ByzPy's calling convention, errors, subtasks, brute-force checks."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from velocity.byzpy.aggregators import Aggregator
from velocity.byzpy.aggregators.coordinate_wise import (
    CoordinateWiseMedian,
    CoordinateWiseTrimmedMean,
    MeanOfMedians,
)
from velocity.byzpy.aggregators.geometric_wise import (
    SMEA,
    GeometricMedian,
    Krum,
    MinimumDiameterAveraging,
    MoNNA,
    MultiKrum,
)
from velocity.byzpy.aggregators.norm_wise import (
    CAF,
    CenteredClipping,
    ComparativeGradientElimination,
)
from velocity.byzpy.engine.graph.operator import OpContext
from velocity.byzpy.engine.graph.subtask import SubTask

# every aggregator, as it is built for n = 7 vectors
FACTORIES: dict[str, Callable[[], Aggregator]] = {
    "median": lambda: CoordinateWiseMedian(),
    "trimmed_mean": lambda: CoordinateWiseTrimmedMean(f=2),
    "meamed": lambda: MeanOfMedians(f=2),
    "geometric_median": lambda: GeometricMedian(),
    "krum": lambda: Krum(f=2),
    "multi_krum": lambda: MultiKrum(f=2, q=3),
    "mda": lambda: MinimumDiameterAveraging(f=2),
    "monna": lambda: MoNNA(f=2),
    "smea": lambda: SMEA(f=2),
    "centered_clipping": lambda: CenteredClipping(c_tau=1.0),
    "cge": lambda: ComparativeGradientElimination(f=2),
    "caf": lambda: CAF(f=2),
}
CTX = OpContext(node_name="agg")


def _rows(n: int = 7, shape: tuple[int, ...] = (5,), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape))


def test_every_aggregator_is_tested() -> None:
    import velocity.byzpy.aggregators.coordinate_wise as cw
    import velocity.byzpy.aggregators.geometric_wise as gw
    import velocity.byzpy.aggregators.norm_wise as nw

    exported = {name for mod in (cw, gw, nw) for name in mod.__all__}
    built = {type(make()).__name__ for make in FACTORIES.values()}
    assert built == exported


@pytest.mark.parametrize("name", FACTORIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_in_numpy_out(name: str, dtype: type) -> None:
    rows = _rows(shape=(3, 4)).astype(dtype)
    out = FACTORIES[name]().aggregate(list(rows))
    assert isinstance(out, np.ndarray)
    assert out.dtype == dtype
    assert out.shape == (3, 4)
    torch_out = FACTORIES[name]().aggregate([torch.from_numpy(r) for r in rows])
    np.testing.assert_allclose(out, torch_out.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", FACTORIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_in_torch_out(name: str, dtype: torch.dtype) -> None:
    grads = [torch.tensor(r, dtype=dtype) for r in _rows(shape=(3, 4))]
    before = [g.clone() for g in grads]
    out = FACTORIES[name]().aggregate(grads)
    assert isinstance(out, torch.Tensor)
    assert out.dtype == dtype
    assert out.shape == (3, 4)
    assert out.device == grads[0].device
    assert all(torch.equal(g, b) for g, b in zip(grads, before, strict=True))  # not mutated


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", FACTORIES)
def test_cuda_in_cuda_out(name: str) -> None:  # pragma: no cover - GPU machines only
    grads = [torch.tensor(r, dtype=torch.float32, device="cuda") for r in _rows()]
    out = FACTORIES[name]().aggregate(grads)
    assert out.device.type == "cuda"
    cpu = FACTORIES[name]().aggregate([g.cpu() for g in grads])
    torch.testing.assert_close(out.cpu(), cpu, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", FACTORIES)
def test_bad_gradients_are_refused_naming_the_argument(name: str) -> None:
    agg = FACTORIES[name]()
    with pytest.raises(ValueError, match="gradients must be a non-empty sequence"):
        agg.aggregate([])
    shapes = [torch.zeros(3)] * 6 + [torch.zeros(4)]
    with pytest.raises(ValueError, match=r"gradients\[6\] has shape \(4,\)"):
        agg.aggregate(shapes)
    mixed: list[Any] = [torch.zeros(3)] * 6 + [np.zeros(3)]
    with pytest.raises(ValueError, match="gradients mixes backends"):
        agg.aggregate(mixed)
    with pytest.raises(ValueError, match="floating"):
        agg.aggregate([torch.zeros(3, dtype=torch.int64)] * 7)
    with pytest.raises(ValueError, match="torch tensors or numpy arrays"):
        agg.aggregate([[1.0, 2.0]] * 7)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: CoordinateWiseMedian(chunk_size=0), "chunk_size"),
        (lambda: CoordinateWiseTrimmedMean(f=-1), r"CoordinateWiseTrimmedMean\.f"),
        (lambda: CoordinateWiseTrimmedMean(f=1, chunk_size=-2), "chunk_size"),
        (lambda: MeanOfMedians(f=1.5), r"MeanOfMedians\.f"),  # type: ignore[arg-type]
        (lambda: GeometricMedian(tol=0.0), "tol"),
        (lambda: GeometricMedian(max_iter=0), "max_iter"),
        (lambda: GeometricMedian(eps=-1.0), "eps"),
        (lambda: GeometricMedian(init="zero"), "init"),
        (lambda: Krum(f=-1), r"Krum\.f"),
        (lambda: MultiKrum(f=1, q=0), r"MultiKrum\.q"),
        (lambda: MinimumDiameterAveraging(f=-3), "f"),
        (lambda: MoNNA(f=1, reference_index=-1), "reference_index"),
        (lambda: SMEA(f=1, chunk_size=0), "chunk_size"),
        (lambda: CenteredClipping(c_tau=-1.0), "c_tau"),
        (lambda: CenteredClipping(c_tau=1.0, M=0), r"CenteredClipping\.M"),
        (lambda: CenteredClipping(c_tau=1.0, init="mode"), "init"),
        (lambda: CenteredClipping(c_tau=1.0, eps=0.0), "eps"),
        (lambda: ComparativeGradientElimination(f=-1), "f"),
        (lambda: CAF(f=1, power_iters=0), "power_iters"),
    ],
)
def test_bad_settings_are_refused_naming_the_argument(
    make: Callable[[], object], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    ("agg", "n", "match"),
    [
        (CoordinateWiseTrimmedMean(f=2), 4, r"2f < n; got f=2, n=4"),
        (MeanOfMedians(f=3), 3, r"f < n; got f=3, n=3"),
        (Krum(f=3), 4, r"f < n - 1; got f=3, n=4"),
        (MultiKrum(f=3, q=1), 4, r"f < n - 1"),
        (MultiKrum(f=2, q=4), 5, r"q <= n - f; got q=4, n=5, f=2"),
        (MinimumDiameterAveraging(f=3), 3, r"f < n; got f=3, n=3"),
        (MoNNA(f=2), 4, r"2f < n"),
        (MoNNA(f=1, reference_index=4), 4, "reference_index"),
        (SMEA(f=2), 4, r"2f < n"),
        (ComparativeGradientElimination(f=4), 4, r"f < n"),
        (CAF(f=2), 4, r"2f < n"),
    ],
)
def test_too_few_vectors_are_refused(agg: Aggregator, n: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        agg.aggregate([torch.randn(3) for _ in range(n)])


def test_the_loosest_byzpy_bounds_are_accepted() -> None:
    grads = [torch.randn(3) for _ in range(5)]
    assert Krum(f=3).aggregate(grads).shape == (3,)  # f = n - 2
    assert MultiKrum(f=3, q=2).aggregate(grads).shape == (3,)
    assert MeanOfMedians(f=4).aggregate(grads).shape == (3,)  # f = n - 1
    assert MinimumDiameterAveraging(f=4).aggregate(grads).shape == (3,)


# --------------------------------------------------------------------------- compute()
@pytest.mark.parametrize("name", FACTORIES)
def test_compute_reads_the_gradients_key(name: str) -> None:
    grads = [torch.tensor(r) for r in _rows()]
    agg = FACTORIES[name]()
    assert agg.input_key == "gradients"
    assert torch.equal(agg.compute({"gradients": grads}, context=CTX), agg.aggregate(grads))
    with pytest.raises(KeyError, match="gradients"):
        agg.compute({"vectors": grads}, context=CTX)
    with pytest.raises(TypeError, match="sequence"):
        agg.compute({"gradients": torch.stack(grads)}, context=CTX)


# --------------------------------------------------------------------------- subtasks
class FakePool:
    """The pool the operator sees: a size and ``run_subtask`` (runs the call in place)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.ran: list[SubTask] = []

    async def run_subtask(self, subtask: SubTask) -> object:
        self.ran.append(subtask)
        return subtask.fn(*subtask.args, **subtask.kwargs)


CHUNKED = {
    "median": lambda: CoordinateWiseMedian(chunk_size=3),
    "trimmed_mean": lambda: CoordinateWiseTrimmedMean(f=2, chunk_size=3),
    "meamed": lambda: MeanOfMedians(f=4, chunk_size=4),
}


@pytest.mark.parametrize("name", FACTORIES)
def test_only_coordinate_wise_rules_claim_subtasks(name: str) -> None:
    assert FACTORIES[name]().supports_subtasks is (name in CHUNKED)


@pytest.mark.parametrize("name", CHUNKED)
@pytest.mark.parametrize("backend", ["float32", "float64", "numpy"])
@pytest.mark.parametrize("nonfinite", [False, True])
def test_subtasks_are_bit_identical(name: str, backend: str, nonfinite: bool) -> None:
    rows = _rows(n=8, shape=(2, 5), seed=3)
    if nonfinite:
        rows[1, 0, 0] = np.inf
        rows[5, 1, 4] = np.nan
    grads: list[Any]
    if backend == "numpy":
        grads = list(rows)
    else:
        dtype = torch.float32 if backend == "float32" else torch.float64
        grads = [torch.tensor(r, dtype=dtype) for r in rows]
    agg = CHUNKED[name]()
    pool = FakePool(size=3)
    chunked = asyncio.run(agg.run({"gradients": grads}, context=CTX, pool=pool))
    assert len(pool.ran) == -(-10 // agg.chunk_size)  # type: ignore[attr-defined]
    whole = agg.aggregate(grads)
    assert type(chunked) is type(whole)
    assert chunked.shape == (2, 5)
    if backend == "numpy":
        assert chunked.dtype == whole.dtype
        assert np.array_equal(chunked, whole)
    else:
        assert chunked.dtype == whole.dtype
        assert torch.equal(chunked, whole)
    assert bool(np.isfinite(np.asarray(chunked)).all())


def test_subtasks_check_the_vector_count() -> None:
    agg = CoordinateWiseTrimmedMean(f=3, chunk_size=2)
    with pytest.raises(ValueError, match="2f < n"):
        asyncio.run(agg.run({"gradients": [torch.zeros(4)] * 5}, context=CTX, pool=FakePool(2)))


def test_a_single_worker_pool_just_computes() -> None:
    grads = [torch.randn(6) for _ in range(5)]
    pool = FakePool(size=1)
    out = asyncio.run(
        CoordinateWiseMedian(chunk_size=2).run({"gradients": grads}, context=CTX, pool=pool)
    )
    assert pool.ran == []
    assert torch.equal(out, CoordinateWiseMedian().aggregate(grads))


# --------------------------------------------------------------------------- semantics
def test_median_takes_the_lower_middle_value_for_even_n() -> None:
    grads = [torch.tensor([v, -v]) for v in (1.0, 2.0, 4.0, 100.0)]
    assert CoordinateWiseMedian().aggregate(grads).tolist() == [2.0, -4.0]
    assert CoordinateWiseMedian().aggregate(grads[:3]).tolist() == [2.0, -2.0]


def test_trimmed_mean_and_meamed_match_brute_force() -> None:
    x = _rows(n=9, shape=(6,), seed=4)
    srt = np.sort(x, axis=0)
    tm = CoordinateWiseTrimmedMean(f=3).aggregate(list(x))
    np.testing.assert_allclose(tm, srt[3:6].mean(axis=0), rtol=1e-12)
    for f in (2, 6):  # 6 > n/2: allowed, as in ByzPy
        med = srt[(9 - 1) // 2]
        idx = np.argsort(np.abs(x - med), axis=0, kind="stable")[: 9 - f]
        expected = np.take_along_axis(x, idx, axis=0).mean(axis=0)
        np.testing.assert_allclose(MeanOfMedians(f=f).aggregate(list(x)), expected, rtol=1e-12)


def _krum_scores(x: np.ndarray, f: int) -> np.ndarray:
    n = x.shape[0]
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.array([np.sort(np.delete(d2[i], i))[: n - f - 1].sum() for i in range(n)])


@pytest.mark.parametrize(("n", "f", "q"), [(7, 2, 3), (9, 3, 1), (5, 3, 2), (10, 2, 8)])
def test_krum_and_multikrum_use_n_minus_f_minus_1_neighbours(n: int, f: int, q: int) -> None:
    x = _rows(n=n, shape=(4,), seed=n + f)
    order = np.argsort(_krum_scores(x, f), kind="stable")
    np.testing.assert_allclose(
        MultiKrum(f=f, q=q).aggregate(list(x)), x[order[:q]].mean(0), rtol=1e-10
    )
    np.testing.assert_array_equal(Krum(f=f).aggregate(list(x)), x[order[0]])


def test_cge_monna_mda_smea_match_brute_force() -> None:
    x = _rows(n=7, shape=(3,), seed=9)
    f = 2
    norms = np.linalg.norm(x, axis=1)
    np.testing.assert_allclose(
        ComparativeGradientElimination(f=f).aggregate(list(x)),
        x[np.argsort(norms)[: 7 - f]].mean(0),
        rtol=1e-12,
    )
    ref = 3
    near = np.argsort(np.linalg.norm(x - x[ref], axis=1))[: 7 - f]
    np.testing.assert_allclose(
        MoNNA(f=f, reference_index=ref).aggregate(list(x)), x[near].mean(0), rtol=1e-12
    )
    subsets = list(itertools.combinations(range(7), 7 - f))

    def diameter(s: tuple[int, ...]) -> float:
        return max(np.linalg.norm(x[i] - x[j]) for i in s for j in s)

    best = min(subsets, key=diameter)
    np.testing.assert_allclose(
        MinimumDiameterAveraging(f=f).aggregate(list(x)), x[list(best)].mean(0), rtol=1e-12
    )

    def top_eig(s: tuple[int, ...]) -> float:
        c = x[list(s)] - x[list(s)].mean(0)
        return float(np.linalg.eigvalsh(c.T @ c / len(s))[-1])

    best = min(subsets, key=top_eig)
    np.testing.assert_allclose(SMEA(f=f).aggregate(list(x)), x[list(best)].mean(0), rtol=1e-10)


def test_centered_clipping_matches_its_iteration() -> None:
    x = _rows(n=8, shape=(4,), seed=2) * 3.0
    for init, start in [
        ("mean", x.mean(0)),
        ("zero", np.zeros(4)),
        ("median", np.sort(x, axis=0)[3]),  # the lower middle value of 8
    ]:
        v = start.copy()
        for _ in range(7):
            diff = x - v
            dist = np.maximum(np.linalg.norm(diff, axis=1), 1e-12)
            v = v + (diff * np.minimum(1.0, 1.5 / dist)[:, None]).mean(0)
        out = CenteredClipping(c_tau=1.5, M=7, init=init).aggregate(list(x))
        np.testing.assert_allclose(out, v, rtol=1e-10, atol=1e-12)


def test_geometric_median_minimises_the_sum_of_distances() -> None:
    x = _rows(n=9, shape=(3,), seed=5)
    z = GeometricMedian(tol=1e-12, max_iter=2000).aggregate(list(x))

    def cost(p: np.ndarray) -> float:
        return float(np.linalg.norm(x - p, axis=1).sum())

    rng = np.random.default_rng(0)
    assert all(cost(z) <= cost(z + 1e-3 * rng.normal(size=3)) for _ in range(20))


def test_caf_filters_a_far_outlier() -> None:
    honest = [torch.tensor(p) for p in ([0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0])]
    out = CAF(f=1).aggregate([*honest, torch.tensor([60.0, -60.0])])
    assert torch.allclose(out, torch.tensor([0.5, 0.5]), atol=1e-2)


def test_non_finite_vectors_count_against_f() -> None:
    grads = [torch.randn(3) for _ in range(6)] + [torch.full((3,), float("inf"))]
    finite = grads[:6]
    assert torch.equal(MultiKrum(f=2, q=2).aggregate(grads), MultiKrum(f=1, q=2).aggregate(finite))
    with pytest.raises(ValueError, match="non-finite"):
        Krum(f=0).aggregate(grads)


def test_seed_docstring_examples() -> None:
    grads = [torch.randn(100) for _ in range(10)]
    assert CoordinateWiseMedian().aggregate(grads).shape == torch.Size([100])
    big = [torch.randn(1000) for _ in range(10)]
    assert CoordinateWiseMedian(chunk_size=4096).aggregate(big).shape == (1000,)
    assert CoordinateWiseTrimmedMean(f=2, chunk_size=2048).aggregate(big).shape == (1000,)
    assert Krum(f=2, chunk_size=16).aggregate(grads).shape == (100,)
    assert MultiKrum(f=2, q=5, chunk_size=16).aggregate(grads).shape == (100,)
    assert CenteredClipping(c_tau=1.0, M=10, init="mean").aggregate(grads).shape == (100,)
