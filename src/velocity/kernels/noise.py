"""Gaussian noise (the seed's standalone noise kernel)."""

from __future__ import annotations

import torch
from torch import Tensor

from velocity.errors import ValidationError
from velocity.kernels._checks import check_nonneg_float

__all__ = ["apply_gaussian_noise"]


def apply_gaussian_noise(
    vector: Tensor, std: float, generator: torch.Generator | None = None
) -> Tensor:
    r"""Return ``vector + N(0, std²)`` noise as a new tensor (input untouched).

    The noise is drawn from ``generator`` (which must live on the vector's device) — never
    from the global random state; without one, a fresh non-deterministically seeded generator
    is used. Used for central differential privacy and the Gaussian attack.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> apply_gaussian_noise(torch.zeros(3), 0.0, g).tolist()
    [0.0, 0.0, 0.0]
    """
    if not isinstance(vector, Tensor) or not vector.is_floating_point():
        raise ValidationError("apply_gaussian_noise: vector must be a floating torch.Tensor")
    sigma = check_nonneg_float(std, "std", "apply_gaussian_noise")
    gen = generator
    if gen is None:
        gen = torch.Generator(device=vector.device)
        gen.seed()
    elif not isinstance(gen, torch.Generator):
        raise ValidationError("apply_gaussian_noise: generator must be a torch.Generator or None")
    noise = torch.randn(vector.shape, generator=gen, dtype=vector.dtype, device=vector.device)
    return vector + sigma * noise
