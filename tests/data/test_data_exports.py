"""The public surface of ``velocity.data`` is exactly ``__all__``, and the contract names exist."""

from __future__ import annotations

import velocity.data as data
from velocity.errors import ConfigurationError, SecurityError, VelocityError

CONTRACT = {
    "ArrayDataset",
    "DATASETS",
    "PARTITION_SCHEMES",
    "Partition",
    "load_dataset",
    "partition",
    "plot_label_histogram",
    "DataNotFoundError",
}


def test_all_names_resolve_and_are_unique() -> None:
    assert len(set(data.__all__)) == len(data.__all__)
    assert [n for n in data.__all__ if not hasattr(data, n)] == []
    assert set(data.__all__) >= CONTRACT


def test_registries() -> None:
    assert data.DATASETS == ("mnist", "fashion_mnist", "cifar10", "shakespeare", "synthetic")
    assert data.PARTITION_SCHEMES == ("iid", "dirichlet", "shard", "natural")
    assert set(data.NORMALIZATION) == {"mnist", "fashion_mnist", "cifar10"}
    assert len(data.SHAKESPEARE_VOCAB) == 80
    assert len(set(data.SHAKESPEARE_VOCAB)) == 80


def test_error_hierarchy() -> None:
    assert issubclass(data.DataNotFoundError, ConfigurationError)
    assert issubclass(data.DataNotFoundError, ValueError)
    assert issubclass(data.ChecksumError, SecurityError)
    assert issubclass(data.ChecksumError, VelocityError)
