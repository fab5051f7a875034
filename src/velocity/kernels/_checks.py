"""Input validation shared by every kernel (private).

Every check raises :class:`velocity.errors.ValidationError` with a message that names the
rule, the argument and the numbers, so a user never sees a traceback from deep inside.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from velocity.errors import ValidationError

__all__ = [
    "check_choice",
    "check_f",
    "check_int",
    "check_nonneg_float",
    "check_updates",
    "check_weights",
    "require",
    "to_work_dtype",
]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def require(condition: bool, message: str) -> None:
    """Raise ``ValidationError(message)`` unless ``condition`` holds."""
    if not condition:
        raise ValidationError(message)


def check_updates(updates: object, rule: str) -> Tensor:
    """Return ``updates`` if it is a floating ``(n, d)`` tensor with n, d >= 1."""
    if not isinstance(updates, Tensor):
        raise ValidationError(
            f"{rule}: updates must be a torch.Tensor of shape (n, d); got {type(updates).__name__}"
        )
    if updates.ndim != 2:
        raise ValidationError(
            f"{rule}: updates must have shape (n, d); got shape {tuple(updates.shape)}"
        )
    n, d = updates.shape
    if n < 1 or d < 1:
        raise ValidationError(f"{rule}: updates needs n >= 1 rows and d >= 1 columns; got {n}x{d}")
    if not updates.is_floating_point():
        raise ValidationError(
            f"{rule}: updates must have a floating dtype (float16, bfloat16, float32, float64); "
            f"got {updates.dtype}"
        )
    return updates.detach()


def check_weights(weights: object, n: int, rule: str) -> Tensor | None:
    """Validate optional per-row weights: shape ``(n,)``, finite, non-negative."""
    if weights is None:
        return None
    if not isinstance(weights, Tensor):
        raise ValidationError(
            f"{rule}: weights must be a torch.Tensor of shape ({n},) or None; "
            f"got {type(weights).__name__}"
        )
    if weights.shape != (n,):
        raise ValidationError(
            f"{rule}: weights must have shape ({n},) to match {n} update rows; "
            f"got {tuple(weights.shape)}"
        )
    if weights.dtype == torch.bool or weights.is_complex():
        raise ValidationError(f"{rule}: weights must be real numbers; got dtype {weights.dtype}")
    w = weights.detach().to(torch.float64)
    if not bool(torch.isfinite(w).all()):
        raise ValidationError(f"{rule}: weights must be finite; got {weights.tolist()}")
    if bool((w < 0).any()):
        bad = torch.nonzero(w < 0).flatten().tolist()
        raise ValidationError(f"{rule}: weights must be >= 0; rows {bad} are negative")
    return w


def check_int(value: object, name: str, rule: str, *, minimum: int = 0) -> int:
    """``value`` must be an integer (Python or numpy, not bool) and at least ``minimum``."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise ValidationError(f"{rule}: {name} must be an int >= {minimum}; got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValidationError(f"{rule}: {name} must be an int >= {minimum}; got {value}")
    return value


def check_f(f: object, rule: str) -> int:
    """The number of tolerated Byzantine rows: an int >= 0."""
    return check_int(f, "f", rule, minimum=0)


def check_nonneg_float(value: object, name: str, rule: str, *, positive: bool = False) -> float:
    """A real number (ints accepted) that is finite and >= 0 (> 0 when ``positive``)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise ValidationError(f"{rule}: {name} must be a number; got {value!r}")
    x = float(value)
    bound_ok = x > 0 if positive else x >= 0
    if not math.isfinite(x) or not bound_ok:
        sign = "> 0" if positive else ">= 0"
        raise ValidationError(f"{rule}: {name} must be a finite number {sign}; got {value!r}")
    return x


def check_choice(value: object, name: str, rule: str, choices: Sequence[str]) -> str:
    """``value`` must be one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        accepted = ", ".join(repr(c) for c in choices)
        raise ValidationError(f"{rule}: {name} must be one of {accepted}; got {value!r}")
    return value


def to_work_dtype(x: Tensor) -> Tensor:
    """float16/bfloat16 are computed in float32; other dtypes as they are."""
    return x.float() if x.dtype in _LOW_PRECISION else x
