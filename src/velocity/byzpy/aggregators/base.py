"""``Aggregator``: the base of every ByzPy-style gradient aggregator."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from velocity.byzpy._tensors import input_sequence
from velocity.byzpy.engine.graph.operator import OpContext, Operator

__all__ = ["Aggregator"]


class Aggregator(Operator, ABC):
    """Base class of the aggregators: a sequence of gradient vectors in, one vector out.

    A subclass implements :meth:`aggregate`. As an :class:`Operator` an aggregator can be a
    node of a computation graph: :meth:`compute` reads the vectors under :attr:`input_key`
    (``"gradients"``) and calls :meth:`aggregate`. The rules that can split their work into
    bit-identical pieces set ``supports_subtasks = True`` and implement ``create_subtasks`` /
    ``reduce_subtasks``.

    Examples
    --------
    >>> import torch
    >>> from velocity.byzpy.aggregators.coordinate_wise.median import CoordinateWiseMedian
    >>> CoordinateWiseMedian().aggregate([torch.randn(100) for _ in range(10)]).shape
    torch.Size([100])
    """

    name: str = "aggregator"
    input_key: str = "gradients"

    def compute(self, inputs: Mapping[str, object], *, context: OpContext) -> Any:
        """:meth:`aggregate` of ``inputs[input_key]``.

        Raises
        ------
        KeyError
            If ``inputs`` has no :attr:`input_key`.
        TypeError
            If the value under it is not a sequence.
        """
        return self.aggregate(input_sequence(inputs, self.input_key, self.name))

    @abstractmethod
    def aggregate(self, gradients: Sequence[Any]) -> Any:
        """Reduce a non-empty sequence of same-shaped vectors to one.

        Parameters
        ----------
        gradients : sequence of torch.Tensor or numpy.ndarray
            One vector per node, all of one shape and one backend.

        Returns
        -------
        torch.Tensor or numpy.ndarray
            One vector of the inputs' backend, shape, dtype and device.

        Raises
        ------
        ValueError
            If ``gradients`` is empty, mixes backends or shapes, or is too short for the rule.
        """
