"""velocity.byzpy pre-aggregators: ByzPy's calling convention, errors, brute-force checks."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from velocity.byzpy.engine.graph.operator import OpContext
from velocity.byzpy.pre_aggregators import (
    ARC,
    Bucketing,
    Clipping,
    NearestNeighborMixing,
    PreAggregator,
)

FACTORIES: dict[str, Callable[[], PreAggregator]] = {
    "bucketing": lambda: Bucketing(bucket_size=3, rng=random.Random(0)),
    "clipping": lambda: Clipping(threshold=1.0),
    "arc": lambda: ARC(f=2),
    "nnm": lambda: NearestNeighborMixing(f=2),
}
OUT_LEN = {"bucketing": 3, "clipping": 7, "arc": 7, "nnm": 7}
CTX = OpContext(node_name="pre")


def _rows(n: int = 7, shape: tuple[int, ...] = (5,), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *shape)) * 2.0


def test_every_pre_aggregator_is_tested() -> None:
    import velocity.byzpy.pre_aggregators as pre

    built = {type(make()).__name__ for make in FACTORIES.values()}
    assert built | {"PreAggregator"} == set(pre.__all__)


@pytest.mark.parametrize("name", FACTORIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_in_numpy_out(name: str, dtype: type) -> None:
    out = FACTORIES[name]().pre_aggregate(list(_rows(shape=(3, 4)).astype(dtype)))
    assert isinstance(out, list)
    assert len(out) == OUT_LEN[name]
    assert all(isinstance(v, np.ndarray) and v.dtype == dtype and v.shape == (3, 4) for v in out)


@pytest.mark.parametrize("name", FACTORIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_in_torch_out(name: str, dtype: torch.dtype) -> None:
    xs = [torch.tensor(r, dtype=dtype) for r in _rows(shape=(3, 4))]
    before = [x.clone() for x in xs]
    out = FACTORIES[name]().pre_aggregate(xs)
    assert len(out) == OUT_LEN[name]
    assert all(isinstance(v, torch.Tensor) and v.dtype == dtype and v.shape == (3, 4) for v in out)
    assert all(torch.equal(x, b) for x, b in zip(xs, before, strict=True))


@pytest.mark.parametrize("name", FACTORIES)
def test_bad_vectors_are_refused_naming_the_argument(name: str) -> None:
    pre = FACTORIES[name]()
    with pytest.raises(ValueError, match="xs must be a non-empty sequence"):
        pre.pre_aggregate([])
    with pytest.raises(ValueError, match=r"xs\[2\] has shape \(2,\)"):
        pre.pre_aggregate([torch.zeros(3), torch.zeros(3), torch.zeros(2)])
    mixed: list[Any] = [np.zeros(3), np.zeros(3), torch.zeros(3)]
    with pytest.raises(ValueError, match="xs mixes backends"):
        pre.pre_aggregate(mixed)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Bucketing(bucket_size=0), "bucket_size"),
        (lambda: Bucketing(bucket_size=2, feature_chunk_size=0), "feature_chunk_size"),
        (lambda: Bucketing(bucket_size=2, perm=[0, -1]), "perm"),
        (lambda: Bucketing(bucket_size=2, rng=np.random.default_rng(0)), "rng"),  # type: ignore[arg-type]
        (lambda: Clipping(threshold=-0.5), "threshold"),
        (lambda: Clipping(chunk_size=0), "chunk_size"),
        (lambda: ARC(f=-1), r"ARC\.f"),
        (lambda: NearestNeighborMixing(f=-1), "f"),
        (lambda: NearestNeighborMixing(f=1, feature_chunk_size=0), "feature_chunk_size"),
    ],
)
def test_bad_settings_are_refused_naming_the_argument(
    make: Callable[[], object], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_call_time_limits() -> None:
    xs = [torch.randn(3) for _ in range(4)]
    with pytest.raises(ValueError, match=r"perm must be a permutation of range\(n\) = range\(4\)"):
        Bucketing(bucket_size=2, perm=[0, 1, 2]).pre_aggregate(xs)
    with pytest.raises(ValueError, match=r"perm must be a permutation"):
        Bucketing(bucket_size=2, perm=[0, 1, 1, 2]).pre_aggregate(xs)
    with pytest.raises(ValueError, match=r"f must be <= the number of vectors; got f=5, n=4"):
        ARC(f=5).pre_aggregate(xs)
    with pytest.raises(ValueError, match=r"f < n; got f=4, n=4"):
        NearestNeighborMixing(f=4).pre_aggregate(xs)


@pytest.mark.parametrize("name", FACTORIES)
def test_compute_reads_the_vectors_key(name: str) -> None:
    xs = [torch.tensor(r) for r in _rows()]
    pre = FACTORIES[name]()
    assert pre.input_key == "vectors"
    got = pre.compute({"vectors": xs}, context=CTX)
    expected = FACTORIES[name]().pre_aggregate(xs)  # a fresh rng in the same state
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    with pytest.raises(KeyError, match="vectors"):
        pre.compute({"gradients": xs}, context=CTX)
    with pytest.raises(TypeError, match="sequence"):
        pre.compute({"vectors": 3}, context=CTX)


def test_seed_bucketing_example() -> None:
    out = Bucketing(bucket_size=4).pre_aggregate([torch.randn(100) for _ in range(10)])
    assert len(out) == 3
    assert all(v.shape == (100,) for v in out)


def test_bucketing_follows_random_shuffle_and_perm() -> None:
    x = _rows(n=7, seed=1)
    order = list(range(7))
    random.Random(42).shuffle(order)
    out = Bucketing(bucket_size=3, rng=random.Random(42)).pre_aggregate(list(x))
    for b, start in enumerate(range(0, 7, 3)):
        np.testing.assert_allclose(out[b], x[order[start : start + 3]].mean(0), rtol=1e-12)
    perm = [6, 5, 4, 3, 2, 1, 0]
    out = Bucketing(bucket_size=2, perm=perm).pre_aggregate(list(x))
    assert len(out) == 4
    np.testing.assert_allclose(out[-1], x[0], rtol=1e-12)
    np.testing.assert_allclose(out[0], x[[6, 5]].mean(0), rtol=1e-12)


def test_bucketing_without_rng_still_partitions() -> None:
    x = [torch.full((2,), float(i)) for i in range(6)]
    out = Bucketing(bucket_size=2).pre_aggregate(x)
    assert len(out) == 3  # three means of two distinct vectors each: their sum is half the total
    assert sum(v.sum().item() for v in out) * 2 == pytest.approx(sum(v.sum().item() for v in x))


def test_clipping_and_arc_match_brute_force() -> None:
    x = _rows(n=9, seed=2)
    norms = np.linalg.norm(x, axis=1)
    out = np.stack(Clipping(threshold=2.5).pre_aggregate(list(x)))
    np.testing.assert_allclose(out, x * np.minimum(1.0, 2.5 / norms)[:, None], rtol=1e-12)
    f = 3
    k = (2 * f * (9 - f)) // 9
    thr = np.sort(norms)[9 - k - 1]
    out = np.stack(ARC(f=f).pre_aggregate(list(x)))
    np.testing.assert_allclose(out, x * np.minimum(1.0, thr / norms)[:, None], rtol=1e-12)
    assert np.array_equal(np.stack(ARC().pre_aggregate(list(x))), x)  # f=0: nothing clipped


def test_nnm_matches_brute_force() -> None:
    x = _rows(n=8, seed=3)
    f = 3
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    expected = np.stack([x[np.argsort(d[i], kind="stable")[: 8 - f]].mean(0) for i in range(8)])
    np.testing.assert_allclose(
        np.stack(NearestNeighborMixing(f=f).pre_aggregate(list(x))), expected, rtol=1e-10
    )
