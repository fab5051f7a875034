"""``load_dataset``: one entry point for every dataset (private; re-exported by the package)."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from typing import Final, Literal

from velocity.data._checks import check_bool, check_choice
from velocity.data._dataset import ArrayDataset
from velocity.data._shakespeare import load_shakespeare
from velocity.data._synthetic import load_synthetic
from velocity.data._vision import load_cifar10, load_fashion_mnist, load_mnist
from velocity.errors import ConfigurationError

__all__ = ["DATASETS", "load_dataset"]

_Loader = Callable[..., ArrayDataset]

_LOADERS: Final[Mapping[str, _Loader]] = {
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "shakespeare": load_shakespeare,
    "synthetic": load_synthetic,
}

DATASETS: Final[tuple[str, ...]] = ("mnist", "fashion_mnist", "cifar10", "shakespeare", "synthetic")
"""Names accepted by :func:`load_dataset`."""

_SPLITS: Final = ("train", "test")


def _options_of(loader: _Loader) -> tuple[str, ...]:
    return tuple(
        name
        for name, p in inspect.signature(loader).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    )


def load_dataset(
    name: str,
    *,
    split: Literal["train", "test"] = "train",
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    **options: object,
) -> ArrayDataset:
    """Load one split of a dataset into memory.

    Parameters
    ----------
    name : {"mnist", "fashion_mnist", "cifar10", "shakespeare", "synthetic"}
    split : {"train", "test"}
    data_dir : path, optional
        Searched first (the files directly or in the dataset's sub-folder), then
        ``$VELOCITY_DATA``, then the cache (``$VELOCITY_CACHE`` or ``~/.cache/velocity``).
    download : bool
        Whether to fetch missing files from the official source into the cache (checked
        against the published MD5/SHA-256). ``False`` raises
        :class:`~velocity.data.DataNotFoundError` listing the places searched.
    **options
        Per dataset (unknown options are an error):

        - ``mnist``, ``fashion_mnist``, ``cifar10``: ``normalize=True`` (standardise with the
          train-split constants in ``docs/data.md``; else ``x`` in ``[0, 1]``),
          ``verify=True`` (check found official files' checksums), ``timeout=60.0``.
        - ``shakespeare``: ``min_samples_per_client=2``, ``max_clients=None``,
          ``train_fraction=0.8``, ``isolate_clients=False``, ``verify=True``,
          ``timeout=60.0``.
        - ``synthetic``: ``num_clients=30``, ``alpha=1.0``, ``beta=1.0``, ``dim=60``,
          ``num_classes=10``, ``seed=0``, ``iid=False``, ``train_fraction=0.9``.

    Returns
    -------
    ArrayDataset

    Examples
    --------
    >>> ds = load_dataset("synthetic", split="test", num_clients=5, seed=1)
    >>> ds.x.shape[1], ds.num_classes, len(ds.group_names)
    (60, 10, 5)
    """
    check_choice(name, "name", "load_dataset", DATASETS)
    check_choice(split, "split", f"load_dataset({name!r})", _SPLITS)
    check_bool(download, "download", f"load_dataset({name!r})")
    loader = _LOADERS[name]
    accepted = _options_of(loader)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigurationError(
            f"load_dataset({name!r}): unknown option(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(accepted)}"
        )
    return loader(split, data_dir, bool(download), **options)
