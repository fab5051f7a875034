"""One crafted vector from a :mod:`velocity.attacks` update attack (private)."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from velocity.attacks import AttackContext, UpdateAttack
from velocity.byzpy._tensors import stack
from velocity.byzpy.attacks.base import Attack
from velocity.errors import ValidationError

__all__ = ["FromHonestGrads", "craft_one"]


def craft_one(
    attack: UpdateAttack,
    honest: Tensor,
    own: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The ``(d,)`` row ``attack`` crafts for one adversary from ``honest`` ``(h, d)`` (and its
    ``own`` ``(1, d)`` update); float32, as :mod:`velocity.attacks` crafts every row."""
    gen = generator if generator is not None else torch.Generator()
    ctx = AttackContext(honest=honest, own=own, num_byzantine=1, generator=gen)
    return attack.craft(ctx)[0]


class FromHonestGrads(Attack):
    """An attack crafted from ``honest_grads`` alone: :meth:`apply` checks and stacks them
    (any backend, shape and dtype) and restores the crafted row to their layout; subclasses
    give :meth:`_craft` on the stacked ``(h, d)`` float tensor."""

    uses_honest_grads: bool = True

    def apply(
        self,
        *,
        model: nn.Module | None = None,
        x: Tensor | None = None,
        y: Tensor | None = None,
        honest_grads: list[Any] | None = None,
        base_grad: Any | None = None,
    ) -> Any:
        name = type(self).__name__
        if not honest_grads:
            raise ValidationError(f"{name} requires honest_grads (a non-empty list)")
        honest, layout = stack(honest_grads, "honest_grads", name)
        return layout.restore(self._craft(honest))

    @abstractmethod
    def _craft(self, honest: Tensor) -> Tensor:
        """The ``(d,)`` crafted row from the ``(h, d)`` honest gradients."""
