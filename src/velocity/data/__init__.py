"""Datasets and client partitioning for federated simulations.

- :func:`load_dataset` reads MNIST, Fashion-MNIST, CIFAR-10 and LEAF-style Shakespeare from
  disk (``data_dir`` -> ``$VELOCITY_DATA`` -> cache -> verified download) or generates
  FedProx's Synthetic(alpha, beta), and returns an in-memory :class:`ArrayDataset`.
- :func:`partition` splits sample indices among clients (IID, Dirichlet label skew,
  McMahan's shards, or the data's natural clients) into a CSR :class:`Partition`.
- :func:`plot_label_histogram` draws a partition's label skew.

See ``docs/data.md`` for file layouts, checksums, normalisation constants and the exact
definitions.
"""

from __future__ import annotations

from velocity.data._dataset import ArrayDataset
from velocity.data._errors import ChecksumError, DataNotFoundError
from velocity.data._partition import PARTITION_SCHEMES, Partition, partition
from velocity.data._plot import plot_label_histogram
from velocity.data._registry import DATASETS, load_dataset
from velocity.data._shakespeare import SHAKESPEARE_VOCAB
from velocity.data._vision import NORMALIZATION

__all__ = [
    "DATASETS",
    "NORMALIZATION",
    "PARTITION_SCHEMES",
    "SHAKESPEARE_VOCAB",
    "ArrayDataset",
    "ChecksumError",
    "DataNotFoundError",
    "Partition",
    "load_dataset",
    "partition",
    "plot_label_histogram",
]
