"""``Attack``: the base of every ByzPy-style Byzantine attack."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from velocity.byzpy.engine.graph.operator import OpContext, Operator

__all__ = ["Attack"]


class Attack(Operator, ABC):
    """Base class of the attacks: what a Byzantine node sends instead of its gradient.

    A subclass implements :meth:`apply` and says what it needs through three class flags:
    ``uses_base_grad`` (the node's own honest gradient), ``uses_honest_grads`` (the other
    honest nodes' gradients) and ``uses_model_batch`` (the model and a batch ``x``, ``y``).
    :meth:`compute` passes exactly those inputs (keys ``"base_grad"``, ``"honest_grads"``,
    ``"model"``, ``"x"``, ``"y"``) to :meth:`apply`.

    Examples
    --------
    >>> import torch
    >>> from velocity.byzpy.attacks.empire import EmpireAttack
    >>> grads = [torch.ones(3), 3 * torch.ones(3)]
    >>> EmpireAttack(scale=-1.0).apply(honest_grads=grads).tolist()
    [-2.0, -2.0, -2.0]
    """

    name: str = "attack"
    supports_subtasks: bool = False
    uses_base_grad: bool = False
    uses_honest_grads: bool = False
    uses_model_batch: bool = False

    def compute(self, inputs: Mapping[str, object], *, context: OpContext) -> Any:
        """:meth:`apply` with the inputs the ``uses_*`` flags ask for.

        Raises
        ------
        KeyError
            If an input the attack needs is missing from ``inputs``.
        """
        wanted: list[str] = []
        if self.uses_model_batch:
            wanted += ["model", "x", "y"]
        if self.uses_honest_grads:
            wanted.append("honest_grads")
        if self.uses_base_grad:
            wanted.append("base_grad")
        missing = [key for key in wanted if key not in inputs]
        if missing:
            raise KeyError(f"{self.name} requires inputs {missing} (it uses {wanted})")
        kwargs: dict[str, Any] = {key: inputs[key] for key in wanted}
        return self.apply(**kwargs)

    @abstractmethod
    def apply(
        self,
        *,
        model: nn.Module | None = None,
        x: Tensor | None = None,
        y: Tensor | None = None,
        honest_grads: list[Any] | None = None,
        base_grad: Any | None = None,
    ) -> Any:
        """The malicious vector, from the inputs the ``uses_*`` flags ask for.

        Parameters
        ----------
        model, x, y
            The model and a batch (``uses_model_batch``).
        honest_grads : list of torch.Tensor or numpy.ndarray, optional
            The honest nodes' gradients (``uses_honest_grads``).
        base_grad : torch.Tensor or numpy.ndarray, optional
            The node's own honest gradient (``uses_base_grad``).

        Returns
        -------
        torch.Tensor or numpy.ndarray
            One vector of the inputs' backend, shape, dtype and device.

        Raises
        ------
        ValueError
            If a needed input is missing or invalid.
        """
