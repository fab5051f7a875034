"""ByzPy's ``CoordinateWiseTrimmedMean`` on :func:`velocity.kernels.trimmed_mean`."""

from __future__ import annotations

from typing import ClassVar

from velocity._validation import Integer, check_value
from velocity.byzpy.aggregators.coordinate_wise._chunked import CoordinateWiseRule
from velocity.errors import ValidationError

__all__ = ["CoordinateWiseTrimmedMean"]


class CoordinateWiseTrimmedMean(CoordinateWiseRule):
    """Coordinate-wise trimmed mean (Yin et al. 2018): per coordinate, drop the ``f`` smallest
    and ``f`` largest values and average the ``n − 2f`` others.

    Parameters
    ----------
    f : int
        Values trimmed from each end, ``>= 0``; a call needs ``2f < n``.
    chunk_size : int, default 4096
        Coordinates per subtask on a worker pool (a scheduling hint). A positive int.

    Examples
    --------
    >>> import torch
    >>> agg = CoordinateWiseTrimmedMean(f=1)
    >>> agg.aggregate([torch.tensor([v]) for v in (1.0, 2.0, 3.0, 1000.0)]).tolist()
    [2.5]

    Notes
    -----
    Runs :func:`velocity.kernels.trimmed_mean`. Vectors holding NaN or ±inf are dropped and
    count against ``f`` (the non-finite-row policy of ``docs/kernels.md``); ByzPy sorts them
    in. With a worker pool the coordinates are split into blocks (bit-identical).
    """

    name: str = "coordinate-wise-trimmed-mean"
    rule: ClassVar[str] = "trimmed_mean"

    def __init__(self, f: int, *, chunk_size: int = 4096) -> None:
        owner = "CoordinateWiseTrimmedMean"
        self.f: int = check_value(owner, "f", f, Integer(low=0))
        self.chunk_size: int = check_value(owner, "chunk_size", chunk_size, Integer(low=1))

    def budget(self) -> int | None:
        return self.f

    def check_rows(self, n: int) -> None:
        if 2 * self.f >= n:
            raise ValidationError(
                f"CoordinateWiseTrimmedMean: f must satisfy 0 <= 2f < n; got f={self.f}, n={n}"
            )
