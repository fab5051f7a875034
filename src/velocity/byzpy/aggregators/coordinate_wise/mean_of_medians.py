"""ByzPy's ``MeanOfMedians`` (MeaMed) on :func:`velocity.kernels.meamed`."""

from __future__ import annotations

from typing import ClassVar

from velocity._validation import Integer, check_value
from velocity.byzpy.aggregators.coordinate_wise._chunked import CoordinateWiseRule
from velocity.errors import ValidationError

__all__ = ["MeanOfMedians"]


class MeanOfMedians(CoordinateWiseRule):
    """Mean around the median, coordinate-wise (MeaMed; Xie et al. 2018): per coordinate k,
    with median ``m_k``, the mean of the ``n − f`` values closest to ``m_k``.

    Parameters
    ----------
    f : int
        Values dropped per coordinate, ``>= 0``; a call needs ``f < n``.
    chunk_size : int, default 8192
        Coordinates per subtask on a worker pool (a scheduling hint). A positive int.

    Examples
    --------
    >>> import torch
    >>> agg = MeanOfMedians(f=2)
    >>> agg.aggregate([torch.tensor([v]) for v in (0.0, 1.0, 2.0, 3.0, 50.0)]).tolist()
    [2.0]

    Notes
    -----
    Runs :func:`velocity.kernels.meamed` with ByzPy's choices: the median of an even number
    of values is the lower middle one (``even="lower"``) and only ``f < n`` is required
    (``strict=False``; the kernel's default asks ``2f < n``). Vectors holding NaN or ±inf are
    dropped and count against ``f`` (``docs/kernels.md``). Blocks of coordinates on a worker
    pool give the same result bit for bit.
    """

    name: str = "mean-of-medians"
    rule: ClassVar[str] = "meamed"

    def __init__(self, f: int, *, chunk_size: int = 8192) -> None:
        self.f: int = check_value("MeanOfMedians", "f", f, Integer(low=0))
        self.chunk_size: int = check_value(
            "MeanOfMedians", "chunk_size", chunk_size, Integer(low=1)
        )

    def budget(self) -> int | None:
        return self.f

    def check_rows(self, n: int) -> None:
        if self.f >= n:
            raise ValidationError(
                f"MeanOfMedians: f must satisfy 0 <= f < n; got f={self.f}, n={n}"
            )
