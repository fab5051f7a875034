"""The in-memory dataset every loader returns (private; re-exported by the package)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from velocity.errors import ValidationError

__all__ = ["ArrayDataset"]

_HASH_CHUNK_BYTES = 1 << 24


def _hash_tensor(h: hashlib._Hash, t: Tensor) -> None:
    """Feed the row-major bytes of ``t`` to ``h`` in chunks of rows.

    A non-contiguous view (the Shakespeare windows) hashes exactly like its contiguous copy,
    and is never materialised whole.
    """
    t = t.detach().cpu()
    if t.numel() == 0:
        return
    if t.ndim == 0:
        t = t.reshape(1)
    row_bytes = max(1, t[0].numel() * t.element_size())
    rows = max(1, _HASH_CHUNK_BYTES // row_bytes)
    for start in range(0, t.shape[0], rows):
        block = np.ascontiguousarray(t[start : start + rows].numpy())
        h.update(block.data)


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """A whole dataset split as tensors: features, labels and, if it has them, natural clients.

    Parameters
    ----------
    name : str
        The dataset's name as given to :func:`velocity.data.load_dataset`.
    x : Tensor, shape (N, ...)
        Model-ready features (see ``docs/data.md`` for each dataset's dtype and scaling). May be
        a non-contiguous view (Shakespeare's sliding windows share one token buffer).
    y : Tensor, shape (N,), int64
        Labels in ``[0, num_classes)``.
    num_classes : int
    groups : Tensor, shape (N,), int64, optional
        The natural client of each sample (a Shakespeare role, a synthetic device), an index
        into ``group_names``; ``None`` when the data has no natural clients.
    group_names : tuple of str, optional
        One name per group id.

    Examples
    --------
    >>> import torch
    >>> ds = ArrayDataset("toy", torch.zeros(3, 2), torch.tensor([0, 1, 1]), num_classes=2)
    >>> len(ds), ds.checksum()[:12]
    (3, 'fb8e76150d61')
    """

    name: str
    x: Tensor
    y: Tensor
    num_classes: int
    groups: Tensor | None = None
    group_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        where = f"ArrayDataset({self.name!r})"
        if not isinstance(self.x, Tensor) or self.x.ndim < 1:
            raise ValidationError(f"{where}: x must be a tensor of shape (N, ...)")
        if not isinstance(self.y, Tensor) or self.y.ndim != 1 or self.y.dtype != torch.int64:
            raise ValidationError(f"{where}: y must be an int64 tensor of shape (N,)")
        n = self.x.shape[0]
        if self.y.shape[0] != n:
            raise ValidationError(f"{where}: x has {n} rows but y has {self.y.shape[0]}")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int):
            raise ValidationError(f"{where}: num_classes must be an int; got {self.num_classes!r}")
        if self.num_classes < 1:
            raise ValidationError(f"{where}: num_classes must be >= 1; got {self.num_classes}")
        if n and (int(self.y.min()) < 0 or int(self.y.max()) >= self.num_classes):
            raise ValidationError(
                f"{where}: labels must lie in [0, {self.num_classes}); "
                f"got min {int(self.y.min())}, max {int(self.y.max())}"
            )
        if self.groups is None:
            if self.group_names is not None:
                raise ValidationError(f"{where}: group_names given without groups")
            return
        g = self.groups
        if not isinstance(g, Tensor) or g.dtype != torch.int64 or g.shape != (n,):
            raise ValidationError(f"{where}: groups must be an int64 tensor of shape ({n},)")
        if n and int(g.min()) < 0:
            raise ValidationError(f"{where}: group ids must be >= 0; got {int(g.min())}")
        if self.group_names is not None and n and int(g.max()) >= len(self.group_names):
            raise ValidationError(
                f"{where}: group id {int(g.max())} has no name "
                f"(only {len(self.group_names)} group_names)"
            )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def checksum(self) -> str:
        """SHA-256 (hex) identifying the data, for replay manifests.

        The digest covers a one-line header with the dtypes and shapes of ``x`` and ``y``
        (``b"velocity.ArrayDataset/1 x=torch.float32(60000, 1, 28, 28) y=torch.int64(60000,)\\n"``)
        followed by the row-major bytes of ``x`` and then of ``y`` (native byte order). Views
        hash like their contiguous copies. ``name``, ``groups`` and ``group_names`` are not
        included.
        """
        h = hashlib.sha256()
        header = (
            f"velocity.ArrayDataset/1 x={self.x.dtype}{tuple(self.x.shape)} "
            f"y={self.y.dtype}{tuple(self.y.shape)}\n"
        )
        h.update(header.encode())
        _hash_tensor(h, self.x)
        _hash_tensor(h, self.y)
        return h.hexdigest()
