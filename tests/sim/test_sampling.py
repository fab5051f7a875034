"""Client sampling, dropout and stragglers: counts, independence, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from velocity._random import derive_seed, numpy_rng, torch_generator
from velocity.errors import ConfigurationError, ValidationError
from velocity.sim import (
    ClientPopulation,
    DropoutModel,
    FractionSampler,
    StragglerModel,
    VirtualPopulation,
    select_clients,
)


@pytest.mark.parametrize(
    ("n", "fraction", "minimum", "expected"),
    [
        (100, 0.1, 1, 10),
        (100, 1.0, 1, 100),
        (10, 0.01, 1, 1),
        (10, 0.1, 5, 5),
        (3, 0.5, 7, 3),
    ],
)
def test_selection_size(n: int, fraction: float, minimum: int, expected: int) -> None:
    chosen = select_clients(n, fraction, minimum, seed=1, round_=3)
    assert len(chosen) == expected
    assert len(set(chosen.tolist())) == expected
    assert list(chosen) == sorted(chosen)
    assert chosen.min() >= 0
    assert chosen.max() < n


def test_selection_is_derived_from_seed_and_round() -> None:
    a = select_clients(1000, 0.05, 1, seed=7, round_=1)
    assert np.array_equal(a, select_clients(1000, 0.05, 1, seed=7, round_=1))
    assert not np.array_equal(a, select_clients(1000, 0.05, 1, seed=7, round_=2))
    assert not np.array_equal(a, select_clients(1000, 0.05, 1, seed=8, round_=1))


def test_selection_is_uniform() -> None:
    counts = np.zeros(20)
    for r in range(2000):
        counts[select_clients(20, 0.25, 1, seed=0, round_=r)] += 1
    # each client is chosen with probability 5/20: 500 of 2000 rounds, sd ~ 19
    assert np.all(np.abs(counts - 500) < 100), counts


def test_bad_fraction() -> None:
    with pytest.raises(ConfigurationError, match="client_fraction"):
        select_clients(10, 0.0, 1, seed=0, round_=1)


def test_dropout_rate_and_independence() -> None:
    model = DropoutModel(0.3)
    drops = [model.dropped(c, seed=0, round_=r) for r in range(50) for c in range(100)]
    assert abs(np.mean(drops) - 0.3) < 0.03
    # a client's fate does not depend on anything but (seed, round, client)
    assert model.dropped(17, seed=0, round_=4) == DropoutModel(0.3).dropped(17, seed=0, round_=4)
    assert not any(DropoutModel(0.0).dropped(c, seed=0, round_=1) for c in range(100))
    with pytest.raises(ConfigurationError, match="dropout_rate"):
        DropoutModel(1.0)


@pytest.mark.parametrize("dist", ["lognormal", "exponential", "uniform"])
def test_straggler_delay_mean(dist: str) -> None:
    model = StragglerModel(deadline_s=1.8, distribution=dist, mean_s=1.0, sigma=0.5)  # type: ignore[arg-type]
    delays = [model.delay(c, seed=3, round_=r) for r in range(40) for c in range(100)]
    assert abs(np.mean(delays) - 1.0) < 0.06
    late = np.mean([model.late(c, seed=3, round_=1) for c in range(2000)])
    assert 0.0 < late < 0.5


def test_straggler_validation() -> None:
    with pytest.raises(ConfigurationError, match="deadline_s"):
        StragglerModel(deadline_s=0.0)
    with pytest.raises(ConfigurationError, match="delay_distribution"):
        StragglerModel(deadline_s=1.0, distribution="pareto")  # type: ignore[arg-type]


def test_derived_generators_differ_by_key() -> None:
    assert derive_seed(1, 2, "x") != derive_seed(1, 2, "y")
    assert derive_seed(1, "2") != derive_seed(1, 2)
    a = torch.rand(3, generator=torch_generator(5, 1, "train"))
    assert torch.equal(a, torch.rand(3, generator=torch_generator(5, 1, "train")))
    assert numpy_rng(5, 1).random() == numpy_rng(5, 1).random()


def test_population_csr_views() -> None:
    order = torch.arange(10)
    pop = ClientPopulation(order, torch.tensor([0, 3, 3, 10]))
    assert pop.num_clients == 3
    assert pop.indices(2).data_ptr() == order[3:].data_ptr()  # a view, no copy
    assert pop.num_samples(1) == 0
    assert pop.index_of(pop.client_id(2)) == 2
    assert pop.sizes().tolist() == [3, 0, 7]
    with pytest.raises(ValueError, match="offsets"):
        ClientPopulation(order, torch.tensor([0, 4]))


def test_virtual_population_is_lazy_and_deterministic() -> None:
    pop = VirtualPopulation(100_000, pool_size=1000, samples_per_client=50, seed=1)
    again = VirtualPopulation(100_000, pool_size=1000, samples_per_client=50, seed=1)
    assert torch.equal(pop.indices(99_999), again.indices(99_999))
    idx = pop.indices(12)
    assert idx.shape == (50,)
    assert len(set(idx.tolist())) == 50
    assert int(idx.max()) < 1000
    assert pop.client_id(7) == "client-00007"


def test_fraction_sampler_names_the_selected_clients() -> None:
    pop = ClientPopulation(torch.arange(200), torch.arange(0, 201, 2))
    sampler = FractionSampler(pop, fraction=0.1, min_clients=1, seed=4)
    for round_ in (1, 2, 3):
        expected = select_clients(100, 0.1, 1, seed=4, round_=round_)
        ids = sampler.sample(round_)
        assert ids == [pop.client_id(int(i)) for i in expected]
        assert [pop.index_of(c) for c in ids] == expected.tolist()
    assert FractionSampler(pop, fraction=1.0, seed=4).sample(1) == [
        pop.client_id(i) for i in range(100)
    ]
    with pytest.raises(ConfigurationError, match="client_fraction"):
        FractionSampler(pop, fraction=0.0)
    with pytest.raises(ConfigurationError, match="min_clients"):
        FractionSampler(pop, min_clients=0)


@pytest.mark.parametrize(
    "pop",
    [
        ClientPopulation(torch.arange(10), torch.arange(11)),
        VirtualPopulation(10, pool_size=20, samples_per_client=5, seed=0),
    ],
)
def test_populations_map_ids_to_indices_and_back(
    pop: ClientPopulation | VirtualPopulation,
) -> None:
    assert [pop.index_of(pop.client_id(i)) for i in range(10)] == list(range(10))
    for bad in ("client-10", "client-x", "worker-1", "client--1"):
        with pytest.raises(ValidationError, match="unknown client id"):
            pop.index_of(bad)
