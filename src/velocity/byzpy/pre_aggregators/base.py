"""``PreAggregator``: the base of every ByzPy-style pre-aggregator."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from velocity.byzpy._tensors import input_sequence
from velocity.byzpy.engine.graph.operator import OpContext, Operator

__all__ = ["PreAggregator"]


class PreAggregator(Operator, ABC):
    """Base class of the pre-aggregators: vectors in, a list of vectors out.

    A pre-aggregator transforms the vectors before an aggregator sees them (bucketing,
    clipping, nearest-neighbour mixing); the list it returns may be shorter than its input.
    A subclass implements :meth:`pre_aggregate`; :meth:`compute` reads the vectors under
    :attr:`input_key` (``"vectors"``).

    Examples
    --------
    >>> import torch
    >>> from velocity.byzpy.pre_aggregators.bucketing import Bucketing
    >>> len(Bucketing(bucket_size=4).pre_aggregate([torch.randn(100) for _ in range(10)]))
    3
    """

    name: str = "pre_aggregator"
    input_key: str = "vectors"

    def compute(self, inputs: Mapping[str, object], *, context: OpContext) -> list[Any]:
        """:meth:`pre_aggregate` of ``inputs[input_key]``.

        Raises
        ------
        KeyError
            If ``inputs`` has no :attr:`input_key`.
        TypeError
            If the value under it is not a sequence.
        """
        return self.pre_aggregate(input_sequence(inputs, self.input_key, self.name))

    @abstractmethod
    def pre_aggregate(self, xs: Sequence[Any]) -> list[Any]:
        """Transform a non-empty sequence of same-shaped vectors into a list of vectors.

        Parameters
        ----------
        xs : sequence of torch.Tensor or numpy.ndarray
            All of one shape and one backend.

        Returns
        -------
        list of torch.Tensor or numpy.ndarray
            Vectors of the inputs' backend, shape, dtype and device.

        Raises
        ------
        ValueError
            If ``xs`` is empty, mixes backends or shapes, or does not suit the rule.
        """
