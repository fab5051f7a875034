r"""Attacks that poison their clients' local data (data poisoning)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from velocity._validation import Constraint, Integer, NoneOr, Real
from velocity.attacks._base import DataAttack
from velocity.errors import ValidationError

__all__ = ["Backdoor", "LabelFlip", "LabelFlipping", "reverse_labels"]


def reverse_labels(y: Tensor, num_classes: int) -> Tensor:
    """The usual label flip ``y -> C - 1 - y`` (Biggio et al. 2012; ByzFL's convention).

    >>> reverse_labels(torch.tensor([0, 3, 9]), 10).tolist()
    [9, 6, 0]
    """
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValidationError(
            f"label flip: labels must lie in [0, {num_classes - 1}]; got "
            f"[{int(y.min())}, {int(y.max())}]"
        )
    return (num_classes - 1) - y


def _chosen(n: int, fraction: float, generator: torch.Generator) -> Tensor:
    """``round(fraction · n)`` distinct row numbers drawn with ``generator``."""
    k = round(fraction * n)
    return torch.randperm(n, generator=generator)[:k]


@dataclass(frozen=True)
class LabelFlipping(DataAttack):
    r"""Data poisoning during local training: a fraction ``rate`` of the client's labels flipped.

    ``round(rate · n)`` of the client's ``n`` examples, drawn with the round's derived
    generator, get label :math:`C - 1 - y` (Tolpegin et al. 2020, "Data Poisoning Attacks
    Against Federated Learning Systems"); the client then trains honestly on the poisoned
    data. ``intensity`` of ``simulate_attack`` sets ``rate``. Severity: ``rate``. (With an odd
    number of classes the middle class maps to itself. ``round`` is Python's, half to even.)
    """

    name: ClassVar[str] = "label_flipping"
    intensity_field: ClassVar[str | None] = "rate"
    rate: float = 1.0
    _constraints: ClassVar[Mapping[str, Constraint]] = {
        "rate": Real(low=0.0, high=1.0, low_open=True)
    }

    def _poison(
        self, x: Tensor, y: Tensor, num_classes: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        y2 = y.clone()
        idx = _chosen(y.shape[0], self.rate, generator).to(y.device)
        y2[idx] = reverse_labels(y[idx], num_classes)
        return x, y2

    def severity(self) -> float:
        return self.rate


@dataclass(frozen=True)
class LabelFlip(DataAttack):
    r"""ByzPy's LabelFlip: the update of training on *all* labels flipped, times ``scale``.

    :math:`\tilde u = s \cdot \Delta(\text{train on } (x, C - 1 - y))` — in ByzPy's
    parameter-server setting this is :math:`s\,\nabla_\theta L(\text{model}(x), C-1-y)`; in
    federated rounds the local training on flipped labels plays the gradient's part.
    Severity: ``|s|``.
    """

    name: ClassVar[str] = "label_flip"
    scale: float = 1.0
    _constraints: ClassVar[Mapping[str, Constraint]] = {"scale": Real()}

    def _poison(
        self, x: Tensor, y: Tensor, num_classes: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        return x, reverse_labels(y, num_classes)

    def update_scale(self) -> float:
        return self.scale

    def severity(self) -> float:
        return abs(self.scale)


@dataclass(frozen=True)
class Backdoor(DataAttack):
    r"""Pixel-pattern backdoor (Gu et al. 2017, "BadNets"; in FL, Bagdasaryan et al. 2020).

    A ``poison_fraction`` of the client's images get a ``trigger_size`` × ``trigger_size``
    square stamped in the bottom-right corner (value ``trigger_value``; when ``None``, the
    maximum pixel value of the data being poisoned or evaluated) and the label ``target``; the
    client trains on the mix and its update is
    multiplied by ``boost`` (model replacement when ``boost ≈ N/f``). The attack's success is
    the *attack success rate*: the fraction of test images of other classes that the global
    model, given the trigger, classifies as ``target`` — reported each evaluated round as
    ``metrics["backdoor_success_rate"]``. Severity: ``poison_fraction``.
    """

    name: ClassVar[str] = "backdoor"
    target: int = 0
    poison_fraction: float = 0.5
    trigger_size: int = 4
    trigger_value: float | None = None
    boost: float = 1.0
    _constraints: ClassVar[Mapping[str, Constraint]] = {
        "target": Integer(low=0),
        "poison_fraction": Real(low=0.0, high=1.0, low_open=True),
        "trigger_size": Integer(low=1),
        "trigger_value": NoneOr(Real()),
        "boost": Real(low=0.0, low_open=True),
    }

    def apply_trigger(self, x: Tensor, *, value: float | None = None) -> Tensor:
        """A copy of the images ``x`` (``(n, H, W)`` or ``(n, C, H, W)``) with the trigger.

        The trigger's value is ``trigger_value``, else ``value``, else the maximum of ``x``.
        """
        if x.ndim not in (3, 4):
            raise ValidationError(
                f"backdoor: needs images of shape (n, H, W) or (n, C, H, W); got {tuple(x.shape)}"
            )
        h, w = x.shape[-2], x.shape[-1]
        k = self.trigger_size
        if k > min(h, w):
            raise ValidationError(f"backdoor: trigger_size={k} exceeds the image size {h}x{w}")
        out = x.clone()
        if out.numel() == 0:
            return out
        if self.trigger_value is not None:
            value = self.trigger_value
        elif value is None:
            value = float(x.max())
        out[..., h - k :, w - k :] = value
        return out

    def _poison(
        self, x: Tensor, y: Tensor, num_classes: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        if self.target >= num_classes:
            raise ValidationError(
                f"backdoor: target={self.target} is not one of the {num_classes} classes"
            )
        idx = _chosen(y.shape[0], self.poison_fraction, generator).to(x.device)
        x2 = x.clone()
        y2 = y.clone()
        x2[idx] = self.apply_trigger(x[idx], value=float(x.max()) if x.numel() else None)
        y2[idx] = self.target
        return x2, y2

    def update_scale(self) -> float:
        return self.boost

    def severity(self) -> float:
        return self.poison_fraction
