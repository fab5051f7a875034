"""ByzPy's ``Krum`` and ``MultiKrum`` on :func:`velocity.kernels.krum` / ``multi_krum``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from velocity._validation import Integer, check_value
from velocity.byzpy._tensors import stack
from velocity.byzpy.aggregators.base import Aggregator
from velocity.errors import ValidationError
from velocity.kernels import krum, multi_krum

__all__ = ["Krum", "MultiKrum"]


def _check_f(owner: str, f: int, n: int) -> None:
    if f >= n - 1:
        raise ValidationError(f"{owner}: f must satisfy 0 <= f < n - 1; got f={f}, n={n}")


class MultiKrum(Aggregator):
    """Multi-Krum (Blanchard et al. 2017): the mean of the ``q`` vectors with the smallest
    Krum scores, a score being the sum of squared distances to the ``n − f − 1`` nearest
    other vectors.

    Parameters
    ----------
    f : int
        Byzantine vectors tolerated, ``>= 0``; a call needs ``f < n − 1``.
    q : int
        Vectors averaged, ``>= 1``; a call needs ``q <= n − f``.
    chunk_size : int, default 32
        A scheduling hint kept for ByzPy compatibility (positive int); the rule runs as one
        kernel call.

    Examples
    --------
    >>> import torch
    >>> agg = MultiKrum(f=1, q=2)
    >>> agg.aggregate([torch.tensor([v]) for v in (0.0, 0.1, 0.2, 0.3, 50.0)]).tolist()
    [0.15000000596046448]

    Notes
    -----
    Runs :func:`velocity.kernels.multi_krum` with ``m=q``, ``neighbors="n-f-1"`` (ByzPy's
    neighbour count) and ``strict=False`` (ByzPy's ``f < n − 1`` instead of Blanchard et al.'s
    ``n > 2f + 2``). Exact score ties go to the lower index. Vectors holding NaN or ±inf are
    dropped and count against ``f`` (``docs/kernels.md``).
    """

    name: str = "multi-krum"

    def __init__(self, f: int, q: int, *, chunk_size: int = 32) -> None:
        self.f: int = check_value("MultiKrum", "f", f, Integer(low=0))
        self.q: int = check_value("MultiKrum", "q", q, Integer(low=1))
        self.chunk_size: int = check_value("MultiKrum", "chunk_size", chunk_size, Integer(low=1))

    def aggregate(self, gradients: Sequence[Any]) -> Any:
        x, layout = stack(gradients, "gradients", "MultiKrum")
        n = x.shape[0]
        _check_f("MultiKrum", self.f, n)
        if self.q > n - self.f:
            raise ValidationError(
                f"MultiKrum: q must satisfy 1 <= q <= n - f; got q={self.q}, n={n}, f={self.f}"
            )
        out = multi_krum(x, f=self.f, m=self.q, neighbors="n-f-1", strict=False)
        return layout.restore(out)


class Krum(Aggregator):
    """Krum (Blanchard et al. 2017): the one vector with the smallest Krum score (the sum of
    squared distances to its ``n − f − 1`` nearest other vectors), returned as it is.

    Parameters
    ----------
    f : int
        Byzantine vectors tolerated, ``>= 0``; a call needs ``f < n − 1``.
    chunk_size : int, default 32
        A scheduling hint kept for ByzPy compatibility (positive int).

    Examples
    --------
    >>> import torch
    >>> Krum(f=1).aggregate([torch.tensor([v]) for v in (0.0, 0.1, 0.2, 0.3, 50.0)]).tolist()
    [0.10000000149011612]

    Notes
    -----
    ``MultiKrum(f, q=1)``: :func:`velocity.kernels.krum` with ``neighbors="n-f-1"`` and
    ``strict=False``, as in :class:`MultiKrum`.
    """

    name: str = "krum"

    def __init__(self, f: int, *, chunk_size: int = 32) -> None:
        self.f: int = check_value("Krum", "f", f, Integer(low=0))
        self.chunk_size: int = check_value("Krum", "chunk_size", chunk_size, Integer(low=1))

    def aggregate(self, gradients: Sequence[Any]) -> Any:
        x, layout = stack(gradients, "gradients", "Krum")
        _check_f("Krum", self.f, x.shape[0])
        return layout.restore(krum(x, f=self.f, neighbors="n-f-1", strict=False))
