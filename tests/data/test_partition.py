"""Partitioners: coverage, disjointness, determinism, skew, min sizes, CSR scale."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from velocity.data import PARTITION_SCHEMES, Partition, partition
from velocity.errors import ConfigurationError, ValidationError

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _labels(n: int, classes: int = 10, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, classes, size=n))


def _check_csr(p: Partition, n: int, num_clients: int, *, complete: bool = True) -> None:
    assert p.num_clients == num_clients
    assert p.order.dtype == p.offsets.dtype == torch.int64
    assert p.offsets.shape == (num_clients + 1,)
    sizes = p.sizes()
    assert int(sizes.sum()) == p.order.numel()
    if complete:
        assert torch.equal(torch.sort(p.order).values, torch.arange(n))  # disjoint, covering
    else:
        assert torch.unique(p.order).numel() == p.order.numel()  # disjoint
    for k in range(num_clients):
        idx = p.indices(k)
        assert idx.numel() == int(sizes[k])
        if idx.numel() > 1:
            assert bool((idx[1:] > idx[:-1]).all())  # ascending within a client


def _entropy(hist: torch.Tensor) -> float:
    p = hist.double() / hist.sum(1, keepdim=True).clamp_min(1)
    h = -(p * torch.log(p.clamp_min(1e-300))).sum(1)
    return float(h.mean())


# ------------------------------------------------------------------------ common contract


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shard"])
@pytest.mark.parametrize(("n", "k"), [(1000, 10), (997, 7), (60, 30), (5, 5)])
def test_cover_disjoint_min_size(scheme: str, n: int, k: int) -> None:
    y = _labels(n)
    p = partition(y, k, scheme, seed=1, num_shards_per_client=1)  # type: ignore[arg-type]
    _check_csr(p, n, k)
    assert int(p.sizes().min()) >= 1


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shard"])
def test_deterministic_per_seed(scheme: str) -> None:
    y = _labels(2000)
    a = partition(y, 20, scheme, seed=7)  # type: ignore[arg-type]
    torch.manual_seed(123)
    np.random.seed(123)  # noqa: NPY002 - global state must not matter
    b = partition(y, 20, scheme, seed=7)  # type: ignore[arg-type]
    c = partition(y, 20, scheme, seed=8)  # type: ignore[arg-type]
    assert torch.equal(a.order, b.order)
    assert torch.equal(a.offsets, b.offsets)
    assert not (torch.equal(a.order, c.order) and torch.equal(a.offsets, c.offsets))


def test_inputs_not_mutated_and_numpy_labels_accepted() -> None:
    y = _labels(300)
    before = y.clone()
    p = partition(y, 6, "dirichlet", seed=0)
    assert torch.equal(y, before)
    q = partition(y.numpy(), 6, "dirichlet", seed=0)  # type: ignore[arg-type]
    assert torch.equal(p.order, q.order)


def _attempt(*args: object, **kw: object) -> Partition | ConfigurationError:
    try:
        return partition(*args, **kw)  # type: ignore[arg-type]
    except ConfigurationError as e:
        return e


@given(
    n=st.integers(1, 300),
    k=st.integers(1, 40),
    classes=st.integers(1, 12),
    scheme=st.sampled_from(["iid", "dirichlet", "shard"]),
    alpha=st.sampled_from([0.01, 0.3, 1, 50.0]),
    shards=st.integers(1, 4),
    min_samples=st.integers(0, 3),
    seed=st.integers(0, 2**32),
)
@SETTINGS
def test_properties(
    n: int,
    k: int,
    classes: int,
    scheme: str,
    alpha: float,
    shards: int,
    min_samples: int,
    seed: int,
) -> None:
    y = _labels(n, classes, seed % 1000)
    result = _attempt(
        y,
        k,
        scheme,
        seed=seed,
        alpha=alpha,
        num_shards_per_client=shards,
        min_samples=min_samples,
    )
    if isinstance(result, ConfigurationError):
        # Only infeasible settings may fail, and the message names them.
        infeasible = n < k * min_samples or (scheme == "shard" and n < k * shards)
        assert infeasible or (scheme == "shard" and "min_samples" in str(result))
        return
    p = result
    _check_csr(p, n, k)
    assert int(p.sizes().min()) >= min_samples
    hist = p.label_histogram(y, classes)
    assert torch.equal(hist.sum(0), torch.bincount(y, minlength=classes))
    if scheme == "shard" and k * shards >= len(torch.unique(y)):
        assert int((hist > 0).sum(1).max()) <= shards


# -------------------------------------------------------------------------- per scheme


def test_iid_sizes_are_near_equal() -> None:
    p = partition(_labels(103), 10, "iid", seed=0)
    assert p.sizes().tolist() == [11, 11, 11] + [10] * 7


def test_dirichlet_skew_grows_as_alpha_falls() -> None:
    y = _labels(20_000)
    entropies = []
    for alpha in (100.0, 1.0, 0.1):
        hist = partition(y, 20, "dirichlet", seed=3, alpha=alpha).label_histogram(y, 10)
        entropies.append(_entropy(hist))
    assert entropies[0] > entropies[1] > entropies[2]
    assert entropies[0] == pytest.approx(np.log(10), abs=0.02)  # alpha=100: nearly IID
    assert entropies[2] < 0.6 * np.log(10)


def test_dirichlet_repairs_min_samples() -> None:
    y = _labels(1000)
    p = partition(y, 100, "dirichlet", seed=0, alpha=0.05, min_samples=8)
    _check_csr(p, 1000, 100)
    assert int(p.sizes().min()) >= 8


def test_dirichlet_infeasible_names_settings() -> None:
    with pytest.raises(ConfigurationError) as info:
        partition(_labels(100), 30, "dirichlet", seed=0, alpha=0.5, min_samples=4)
    msg = str(info.value)
    for part in ("num_clients=30", "min_samples=4", "alpha=0.5", "N=100"):
        assert part in msg


@pytest.mark.parametrize("s", [1, 2, 3])
def test_shard_clients_hold_at_most_s_labels(s: int) -> None:
    y = _labels(6000)
    p = partition(y, 100, "shard", seed=0, num_shards_per_client=s)
    _check_csr(p, 6000, 100)
    labels_per_client = (p.label_histogram(y, 10) > 0).sum(1)
    assert int(labels_per_client.max()) <= s
    assert int(p.sizes().max() - p.sizes().min()) <= s * 60  # shards are near-equal


def test_shard_with_fewer_shards_than_classes() -> None:
    y = _labels(1000)
    p = partition(y, 2, "shard", seed=0, num_shards_per_client=2)  # 4 shards, 10 classes
    _check_csr(p, 1000, 2)
    assert p.sizes().tolist() == [500, 500]


def test_shard_needs_enough_samples() -> None:
    with pytest.raises(ConfigurationError, match="num_shards_per_client"):
        partition(_labels(50), 20, "shard", seed=0, num_shards_per_client=3)


def test_natural() -> None:
    groups = torch.tensor([2, 0, 2, 5, 5, 5, 0, 2, 2])
    y = torch.zeros(9, dtype=torch.int64)
    p = partition(y, 3, "natural", seed=0, groups=groups)
    assert [p.indices(k).tolist() for k in range(3)] == [[1, 6], [0, 2, 7, 8], [3, 4, 5]]
    top = partition(y, 2, "natural", seed=0, groups=groups)  # the two largest groups: 2 and 5
    _check_csr(top, 9, 2, complete=False)
    assert [top.indices(k).tolist() for k in range(2)] == [[0, 2, 7, 8], [3, 4, 5]]
    with pytest.raises(ConfigurationError, match="3 groups"):
        partition(y, 4, "natural", seed=0, groups=groups)
    with pytest.raises(ConfigurationError, match="needs groups"):
        partition(y, 3, "natural", seed=0)
    with pytest.raises(ConfigurationError, match=r"group 0 only 2 samples.*min_samples=3"):
        partition(y, 3, "natural", seed=0, groups=groups, min_samples=3)
    with pytest.raises(ValidationError, match="groups has 2 entries"):
        partition(y, 1, "natural", seed=0, groups=groups[:2])


# ------------------------------------------------------------------------------- scale


def test_too_many_clients_fails_clearly() -> None:
    y = _labels(60_000)
    for scheme in ("iid", "dirichlet", "shard"):
        with pytest.raises(ConfigurationError) as info:
            partition(y, 100_000, scheme, seed=0)  # type: ignore[arg-type]
        msg = str(info.value)
        assert "num_clients=100000" in msg
        assert "min_samples=1" in msg
        assert "N=60000" in msg


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shard"])
def test_ten_thousand_clients_is_two_small_arrays(scheme: str) -> None:
    y = _labels(60_000)
    start = time.perf_counter()
    p = partition(y, 10_000, scheme, seed=0, num_shards_per_client=2)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - start
    assert elapsed < 20  # generous: the CSR build is O(N log N + K), no per-client objects
    assert p.order.shape == (60_000,)
    assert p.offsets.shape == (10_001,)
    assert int(p.sizes().min()) >= 1
    assert int(p.sizes().sum()) == 60_000
    assert p.indices(9_999).untyped_storage().data_ptr() == p.order.untyped_storage().data_ptr()
    hist = p.label_histogram(y, 10)
    assert hist.shape == (10_000, 10)


# --------------------------------------------------------------------- Partition itself


def test_partition_validation() -> None:
    with pytest.raises(ValidationError, match="offsets must start at 0"):
        Partition(torch.tensor([0, 1]), torch.tensor([0, 1]))
    with pytest.raises(ValidationError, match="non-decreasing"):
        Partition(torch.tensor([0, 1]), torch.tensor([0, 2, 1, 2]))
    with pytest.raises(ValidationError, match="int64"):
        Partition(torch.tensor([0.0]), torch.tensor([0, 1]))
    p = Partition(torch.tensor([0, 1]), torch.tensor([0, 2]))
    with pytest.raises(IndexError):
        p.indices(1)
    with pytest.raises(ValidationError, match=r"\[0, 2\)"):
        p.label_histogram(torch.tensor([0, 2]), 2)
    with pytest.raises(ValidationError, match="only 1 entries"):
        p.label_histogram(torch.tensor([0]), 2)


def test_label_histogram_matches_loop() -> None:
    y = _labels(500, 7)
    p = partition(y, 9, "dirichlet", seed=2, alpha=0.3)
    hist = p.label_histogram(y, 7)
    for k in range(9):
        assert hist[k].tolist() == torch.bincount(y[p.indices(k)], minlength=7).tolist()


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"scheme": "pathological"}, "scheme"),
        ({"alpha": 0}, "alpha"),
        ({"seed": -1}, "seed"),
        ({"num_clients": 0}, "num_clients"),
        ({"num_shards_per_client": 0}, "num_shards_per_client"),
        ({"min_samples": -1}, "min_samples"),
    ],
)
def test_bad_settings(kw: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"num_clients": 2, "scheme": "iid", "seed": 0}
    args.update(kw)
    with pytest.raises(ConfigurationError, match=match):
        partition(_labels(10), **args)  # type: ignore[arg-type]


def test_bad_labels() -> None:
    with pytest.raises(ValidationError, match="integers"):
        partition(torch.rand(10), 2, "iid", seed=0)
    with pytest.raises(ValidationError, match="1-D"):
        partition(torch.zeros(2, 2, dtype=torch.int64), 2, "iid", seed=0)


def test_schemes_constant() -> None:
    assert set(PARTITION_SCHEMES) == {"iid", "dirichlet", "shard", "natural"}
