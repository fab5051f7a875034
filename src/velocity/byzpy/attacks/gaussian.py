"""ByzPy's ``GaussianAttack`` on :class:`velocity.attacks.Gaussian`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from velocity._validation import Integer, NoneOr, Real, check_value
from velocity.attacks import Gaussian
from velocity.byzpy._tensors import stack
from velocity.byzpy.attacks._craft import craft_one
from velocity.byzpy.attacks.base import Attack
from velocity.errors import ValidationError

__all__ = ["GaussianAttack"]


class GaussianAttack(Attack):
    """Pure noise: every coordinate drawn independently from ``N(mu, sigma²)``.

    Parameters
    ----------
    mu : float, default 0.0
        The mean.
    sigma : float, default 1.0
        The standard deviation, ``>= 0``.
    seed : int, optional
        With a seed (an int ``>= 0``) every call draws the same vector, as in ByzPy; without,
        each call draws afresh.
    chunk_size : int, default 8192
        A scheduling hint kept for ByzPy compatibility (positive int).

    Examples
    --------
    >>> import torch
    >>> attack = GaussianAttack(mu=0.0, sigma=1.0, seed=7)
    >>> a = attack.apply(honest_grads=[torch.zeros(3, 4)])
    >>> a.shape, bool((a == attack.apply(honest_grads=[torch.zeros(3, 4)])).all())
    (torch.Size([3, 4]), True)

    Notes
    -----
    Crafted by :class:`velocity.attacks.Gaussian` from a ``torch.Generator`` seeded with
    ``seed`` at each call (float32 draws). ByzPy draws from ``numpy.random.default_rng(seed)``:
    the same distribution, not the same numbers.
    """

    uses_honest_grads: bool = True

    def __init__(
        self,
        mu: float = 0.0,
        sigma: float = 1.0,
        *,
        seed: int | None = None,
        chunk_size: int = 8192,
    ) -> None:
        owner = "GaussianAttack"
        self.mu: float = check_value(owner, "mu", mu, Real())
        self.sigma: float = check_value(owner, "sigma", sigma, Real(low=0.0))
        self.seed: int | None = check_value(owner, "seed", seed, NoneOr(Integer(low=0)))
        self.chunk_size: int = check_value(owner, "chunk_size", chunk_size, Integer(low=1))

    def apply(
        self,
        *,
        model: nn.Module | None = None,
        x: Tensor | None = None,
        y: Tensor | None = None,
        honest_grads: list[Any] | None = None,
        base_grad: Any | None = None,
    ) -> Any:
        if not honest_grads:
            raise ValidationError("GaussianAttack requires honest_grads (a non-empty list)")
        honest, layout = stack(honest_grads, "honest_grads", "GaussianAttack")
        gen = torch.Generator()
        if self.seed is None:
            gen.seed()
        else:
            gen.manual_seed(self.seed)
        row = craft_one(Gaussian(mu=self.mu, sigma=self.sigma), honest, generator=gen)
        return layout.restore(row)
