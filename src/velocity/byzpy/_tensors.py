"""Vectors in, vectors out: ByzPy's list-of-vectors calling convention on the ``(n, d)`` kernels.

ByzPy's aggregators, pre-aggregators and attacks take a sequence of same-shaped vectors
(torch tensors or numpy arrays) and return vectors of the same backend, shape, dtype and
device. The kernels of :mod:`velocity.kernels` take one ``(n, d)`` torch tensor. :func:`stack`
turns the first into the second and returns the :class:`Layout` that turns a result back
(:meth:`Layout.restore` for one ``(d,)`` row, :meth:`Layout.restore_rows` for ``(m, d)``).

Rules (private module):

- a sequence of torch tensors or of numpy arrays, never a mix, every one of the same shape,
  with a floating dtype (float16, bfloat16, float32, float64);
- the stack has the first vector's dtype and (torch) device; the others are converted to it,
  as ByzPy does;
- numpy in, numpy out (a new array); torch in, torch out on the first vector's device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from velocity.errors import ValidationError

__all__ = ["Layout", "Vector", "layout_of", "stack"]

Vector = Tensor | npt.NDArray[Any]
"""One ByzPy vector: a torch tensor or a numpy array."""

_FLOAT_NUMPY = (np.float16, np.float32, np.float64)


@dataclass(frozen=True)
class Layout:
    """How the vectors of a stack looked: backend, shape, dtype and device of the first."""

    backend: Literal["torch", "numpy"]
    shape: tuple[int, ...]
    torch_dtype: torch.dtype
    numpy_dtype: np.dtype[Any] | None
    device: torch.device

    @property
    def size(self) -> int:
        """Entries per vector (``d``)."""
        return math.prod(self.shape)

    def restore(self, row: Tensor) -> Any:
        """A ``(d,)`` result as one vector of this layout (a new array or tensor)."""
        out = row.detach().reshape(self.shape)
        if self.backend == "torch":
            return out.to(dtype=self.torch_dtype, device=self.device)
        assert self.numpy_dtype is not None
        arr: npt.NDArray[Any] = out.cpu().numpy().astype(self.numpy_dtype, copy=True)
        return arr

    def restore_rows(self, rows: Tensor) -> list[Any]:
        """An ``(m, d)`` result as a list of ``m`` vectors of this layout."""
        return [self.restore(rows[i]) for i in range(rows.shape[0])]


def _describe(value: object) -> str:
    return type(value).__name__


def layout_of(values: object, argument: str, owner: str) -> Layout:
    """The :class:`Layout` of ``values`` (checked as :func:`stack` checks it), without stacking."""
    seq = _check_sequence(values, argument, owner)
    return _layout(seq[0], argument, owner)


def _check_sequence(values: object, argument: str, owner: str) -> Sequence[object]:
    if not isinstance(values, Sequence) or isinstance(values, str | bytes):
        raise ValidationError(
            f"{owner}: {argument} must be a sequence of torch tensors or numpy arrays; "
            f"got {_describe(values)}"
        )
    if len(values) == 0:
        raise ValidationError(f"{owner}: {argument} must be a non-empty sequence; got 0 vectors")
    return values


def _layout(first: object, argument: str, owner: str) -> Layout:
    if isinstance(first, Tensor):
        if not first.is_floating_point():
            raise ValidationError(
                f"{owner}: {argument} must hold floating vectors (float16, bfloat16, float32, "
                f"float64); got dtype {first.dtype}"
            )
        shape = tuple(int(s) for s in first.shape)
        layout = Layout("torch", shape, first.dtype, None, first.device)
    elif isinstance(first, np.ndarray):
        if first.dtype.type not in _FLOAT_NUMPY:
            raise ValidationError(
                f"{owner}: {argument} must hold floating vectors (float16, float32, float64); "
                f"got dtype {first.dtype}"
            )
        dtype = torch.from_numpy(np.zeros(1, dtype=first.dtype.newbyteorder("="))).dtype
        shape = tuple(int(s) for s in first.shape)
        layout = Layout("numpy", shape, dtype, first.dtype, torch.device("cpu"))
    else:
        raise ValidationError(
            f"{owner}: {argument} must hold torch tensors or numpy arrays; "
            f"{argument}[0] is a {_describe(first)}"
        )
    if layout.size == 0:
        raise ValidationError(
            f"{owner}: {argument} must hold vectors with at least one entry; "
            f"{argument}[0] has shape {shape}"
        )
    return layout


def stack(values: object, argument: str, owner: str) -> tuple[Tensor, Layout]:
    """Stack ``values`` into one ``(n, d)`` torch tensor, with the :class:`Layout` to undo it.

    Raises ``ValidationError`` (a ``ValueError``) naming ``owner`` and ``argument`` for an
    empty or non-sequence argument, a vector that is neither a torch tensor nor a numpy array,
    a mix of the two, vectors of different shapes, or a non-floating dtype. The stack is a new
    tensor (the inputs are never modified); numpy vectors are converted on the CPU.
    """
    seq = _check_sequence(values, argument, owner)
    layout = _layout(seq[0], argument, owner)
    rows: list[Tensor] = []
    for i, v in enumerate(seq):
        if layout.backend == "torch":
            if not isinstance(v, Tensor):
                raise ValidationError(
                    f"{owner}: {argument} mixes backends: {argument}[0] is a torch tensor, "
                    f"{argument}[{i}] a {_describe(v)}; pass only torch tensors or only numpy "
                    "arrays"
                )
            t = v.detach()
        else:
            if not isinstance(v, np.ndarray):
                raise ValidationError(
                    f"{owner}: {argument} mixes backends: {argument}[0] is a numpy array, "
                    f"{argument}[{i}] a {_describe(v)}; pass only torch tensors or only numpy "
                    "arrays"
                )
            t = torch.from_numpy(np.ascontiguousarray(v, dtype=v.dtype.newbyteorder("=")))
        if tuple(t.shape) != layout.shape:
            raise ValidationError(
                f"{owner}: {argument} must hold vectors of one shape; {argument}[0] has shape "
                f"{layout.shape}, {argument}[{i}] has shape {tuple(t.shape)}"
            )
        rows.append(t.reshape(-1).to(dtype=layout.torch_dtype, device=layout.device))
    return torch.stack(rows, dim=0), layout


def input_sequence(inputs: Mapping[str, object], key: str, who: str) -> Sequence[Any]:
    """``inputs[key]``, a sequence of vectors (an operator's ``compute`` input), or the
    KeyError / TypeError ByzPy's operators raise, naming ``who`` and ``key``."""
    if key not in inputs:
        raise KeyError(f"{who} expects input key {key!r}")
    values = inputs[key]
    if not isinstance(values, Sequence) or isinstance(values, str | bytes):
        raise TypeError(
            f"{who} expects a sequence of vectors at {key!r}; got {type(values).__name__}"
        )
    return values
