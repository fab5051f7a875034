"""``load_dataset``'s own checks: names, splits, options."""

from __future__ import annotations

import pytest

from velocity.data import DATASETS, load_dataset
from velocity.errors import ConfigurationError


def test_unknown_dataset_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError) as info:
        load_dataset("cifar100")
    for name in DATASETS:
        assert repr(name) in str(info.value)


def test_bad_split() -> None:
    with pytest.raises(ConfigurationError, match="split"):
        load_dataset("synthetic", split="validation")  # type: ignore[arg-type]


def test_unknown_option_lists_accepted() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown option\(s\) 'colour'.*normalize"):
        load_dataset("mnist", colour=True)


def test_download_must_be_bool() -> None:
    with pytest.raises(ConfigurationError, match="download"):
        load_dataset("mnist", download="no")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_image_option_validation(name: str) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        load_dataset(name, timeout=0)
    with pytest.raises(ConfigurationError, match="normalize"):
        load_dataset(name, normalize="yes")
