"""ByzPy's ``CoordinateWiseMedian`` on :func:`velocity.kernels.median`."""

from __future__ import annotations

from typing import ClassVar

from velocity._validation import Integer, check_value
from velocity.byzpy.aggregators.coordinate_wise._chunked import CoordinateWiseRule

__all__ = ["CoordinateWiseMedian"]


class CoordinateWiseMedian(CoordinateWiseRule):
    """Coordinate-wise median (Yin et al. 2018): every coordinate is the median of the n
    vectors' values of it.

    Parameters
    ----------
    chunk_size : int, default 8192
        Coordinates per subtask when run on a worker pool (a scheduling hint; the result does
        not depend on it). A positive int.

    Examples
    --------
    >>> import torch
    >>> agg = CoordinateWiseMedian(chunk_size=4096)
    >>> agg.aggregate([torch.tensor([1.0, 9.0]), torch.tensor([2.0, 8.0]),
    ...                torch.tensor([100.0, -5.0])]).tolist()
    [2.0, 8.0]

    Notes
    -----
    For an even number of vectors the result is the lower of the two middle values, as
    ByzPy (``torch.median``) has it: :func:`velocity.kernels.median` with ``even="lower"``.
    Vectors holding NaN or ±inf are left out (the kernels' non-finite-row policy, see
    ``docs/kernels.md``); ByzPy sorts them in. Robust while fewer than half the values of
    every coordinate are Byzantine. With a worker pool the coordinates are split into
    blocks of ``chunk_size`` (bit-identical to one call).
    """

    name: str = "coordinate-wise-median"
    rule: ClassVar[str] = "median"

    def __init__(self, *, chunk_size: int = 8192) -> None:
        self.chunk_size: int = check_value(
            "CoordinateWiseMedian", "chunk_size", chunk_size, Integer(low=1)
        )
