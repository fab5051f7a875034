"""ByzPy's ``GaussianAttack`` on :class:`velocity.attacks.Gaussian`."""

from __future__ import annotations

import torch
from torch import Tensor

from velocity._validation import Integer, NoneOr, Real, check_value
from velocity.attacks import Gaussian
from velocity.byzpy.attacks._craft import FromHonestGrads, craft_one

__all__ = ["GaussianAttack"]


class GaussianAttack(FromHonestGrads):
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

    def _craft(self, honest: Tensor) -> Tensor:
        gen = torch.Generator()
        if self.seed is None:
            gen.seed()
        else:
            gen.manual_seed(self.seed)
        return craft_one(Gaussian(mu=self.mu, sigma=self.sigma), honest, generator=gen)
