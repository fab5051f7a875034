"""ByzPy's ``LabelFlipAttack``: the gradient of the loss on flipped labels."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from velocity._validation import Integer, NoneOr, Real, check_value
from velocity.attacks import LabelFlip
from velocity.byzpy.attacks.base import Attack
from velocity.errors import ConfigurationError, ValidationError

__all__ = ["LabelFlipAttack"]


class LabelFlipAttack(Attack):
    r"""Label flipping on the gradient: :math:`s\,\nabla_\theta L(\text{model}(x), \text{flip}(y))`,
    flattened over the parameters that require gradients.

    ``flip`` is ``mapping`` (labels not in it are kept) or, without one, the mirror
    ``y → num_classes − 1 − y``.

    Parameters
    ----------
    num_classes : int, optional
        The number of classes (``>= 2``), for the mirror flip.
    mapping : dict of int to int, optional
        An explicit flip; wins over ``num_classes``. One of the two is required.
    loss_fn : callable, optional
        ``loss_fn(logits, labels)``; ``torch.nn.CrossEntropyLoss()`` when ``None``.
    scale : float, default 1.0
        The factor on the gradient.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Linear(4, 3)
    >>> g = LabelFlipAttack(num_classes=3).apply(
    ...     model=model, x=torch.randn(8, 4), y=torch.randint(0, 3, (8,)))
    >>> g.shape
    torch.Size([15])

    Notes
    -----
    The mirror flip is :class:`velocity.attacks.LabelFlip`'s (which refuses labels outside
    ``[0, num_classes − 1]``) and ``scale`` is its update scale; the gradient itself is
    computed here, because :mod:`velocity.attacks` poisons data for local training rather than
    differentiating a given model. As in ByzPy, the model is put in training mode and its
    parameters' ``.grad`` are zeroed before and after.
    """

    uses_model_batch: bool = True

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        mapping: Mapping[int, int] | None = None,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        scale: float = 1.0,
    ) -> None:
        owner = "LabelFlipAttack"
        if mapping is None and num_classes is None:
            raise ConfigurationError(
                "LabelFlipAttack needs mapping (a dict of labels) or num_classes (an int >= 2); "
                "got neither"
            )
        self.num_classes: int | None = check_value(
            owner, "num_classes", num_classes, NoneOr(Integer(low=2))
        )
        self.mapping: dict[int, int] | None = None
        if mapping is not None:
            if not isinstance(mapping, Mapping):
                raise ConfigurationError(
                    f"LabelFlipAttack.mapping must be a dict of int to int; got {mapping!r}"
                )
            self.mapping = {
                check_value(owner, "mapping key", k, Integer()): check_value(
                    owner, "mapping value", v, Integer()
                )
                for k, v in mapping.items()
            }
        if loss_fn is not None and not callable(loss_fn):
            raise ConfigurationError(f"LabelFlipAttack.loss_fn must be callable; got {loss_fn!r}")
        self.loss_fn: Callable[[Tensor, Tensor], Tensor] = (
            loss_fn if loss_fn is not None else nn.CrossEntropyLoss(reduction="mean")
        )
        self.scale: float = check_value(owner, "scale", scale, Real())

    def _flip(self, x: Tensor, y: Tensor) -> Tensor:
        if self.mapping is not None:
            out = y.clone()
            for src, dst in self.mapping.items():
                out[y == src] = dst
            return out
        assert self.num_classes is not None
        _, flipped = LabelFlip(scale=self.scale).poison(
            x, y, num_classes=self.num_classes, generator=torch.Generator()
        )
        return flipped

    def apply(
        self,
        *,
        model: nn.Module | None = None,
        x: Tensor | None = None,
        y: Tensor | None = None,
        honest_grads: list[Any] | None = None,
        base_grad: Any | None = None,
    ) -> Tensor:
        if model is None or x is None or y is None:
            raise ValidationError("LabelFlipAttack requires model, x and y")
        labels = self._flip(x, y.to(dtype=torch.long, device=x.device))
        params = list(model.parameters())
        for p in params:
            if p.grad is not None:
                p.grad.zero_()
        model.train(True)
        loss = self.loss_fn(model(x), labels)
        loss.backward()  # type: ignore[no-untyped-call]
        parts = [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
            for p in params
            if p.requires_grad
        ]
        device = params[0].device if params else x.device
        grad = torch.cat(parts).detach() if parts else torch.zeros(0, device=device)
        scale = LabelFlip(scale=self.scale).update_scale()
        for p in params:
            if p.grad is not None:
                p.grad.detach_()
                p.grad.zero_()
        return scale * grad
