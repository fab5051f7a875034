"""FedProx's Synthetic(alpha, beta): shapes, determinism, heterogeneity, splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from velocity.data import load_dataset
from velocity.errors import ConfigurationError


def test_shapes_and_groups() -> None:
    ds = load_dataset("synthetic", num_clients=7, seed=3)
    assert ds.x.dtype == torch.float32
    assert ds.x.shape == (len(ds), 60)
    assert ds.y.dtype == torch.int64
    assert ds.num_classes == 10
    assert ds.group_names == tuple(f"device_{i}" for i in range(7))
    assert ds.groups is not None
    assert torch.equal(ds.groups, torch.sort(ds.groups).values)  # grouped by device
    assert int(ds.y.max()) < 10


def test_sizes_follow_lognormal_plus_50_and_split() -> None:
    train = load_dataset("synthetic", num_clients=20, seed=0)
    test = load_dataset("synthetic", split="test", num_clients=20, seed=0)
    assert train.groups is not None
    assert test.groups is not None
    n_tr = torch.bincount(train.groups, minlength=20)
    n_te = torch.bincount(test.groups, minlength=20)
    total = n_tr + n_te
    assert int(total.min()) >= 50
    assert torch.equal(n_tr, torch.floor(total * 0.9).long())
    rng = np.random.Generator(np.random.PCG64(0))
    expected = rng.lognormal(4.0, 2.0, 20).astype(np.int64) + 50
    assert total.tolist() == expected.tolist()


def test_deterministic_per_seed() -> None:
    a = load_dataset("synthetic", num_clients=5, seed=11)
    b = load_dataset("synthetic", num_clients=5, seed=11)
    c = load_dataset("synthetic", num_clients=5, seed=12)
    assert a.checksum() == b.checksum()
    assert a.checksum() != c.checksum()


def test_global_random_state_is_untouched() -> None:
    state = np.random.get_state()  # noqa: NPY002 - checking that nobody uses it
    torch_state = torch.get_rng_state()
    load_dataset("synthetic", num_clients=3, seed=1)
    assert np.array_equal(np.random.get_state()[1], state[1])  # noqa: NPY002
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_heterogeneity_grows_with_beta() -> None:
    """Device input means spread more as beta grows (B_k ~ N(0, beta))."""

    def spread(beta: float) -> float:
        ds = load_dataset("synthetic", num_clients=30, alpha=0.0, beta=beta, seed=4)
        assert ds.groups is not None
        means = torch.stack([ds.x[ds.groups == k].mean(0) for k in range(30)])
        return float(means.mean(1).std())

    assert spread(0.0) < spread(1.0) < spread(5.0)


def test_iid_variant_shares_one_model() -> None:
    ds = load_dataset("synthetic", num_clients=10, alpha=0.0, beta=0.0, iid=True, seed=2)
    assert ds.groups is not None
    # all devices draw x from the same N(0, Sigma): per-device means are close to 0
    means = torch.stack([ds.x[ds.groups == k].mean(0) for k in range(10)])
    assert float(means.abs().mean()) < 0.2


def test_options() -> None:
    ds = load_dataset("synthetic", num_clients=2, dim=5, num_classes=3, seed=0)
    assert ds.x.shape[1] == 5
    assert ds.num_classes == 3
    for bad in ({"alpha": -1.0}, {"num_clients": 0}, {"seed": -1}, {"train_fraction": 0}):
        with pytest.raises(ConfigurationError):
            load_dataset("synthetic", **bad)
