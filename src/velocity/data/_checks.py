"""Validation of loader options and partition settings (private).

Every check raises :class:`velocity.errors.ConfigurationError` with a message that names the
function, the setting and the value, e.g. ``partition: alpha must be a finite number > 0; got 0``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

from velocity.errors import ConfigurationError

__all__ = [
    "check_bool",
    "check_choice",
    "check_fraction",
    "check_int",
    "check_positive_float",
]


def check_int(value: object, name: str, where: str, *, minimum: int = 0) -> int:
    """``value`` must be an integer (Python or numpy, not bool) and at least ``minimum``."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise ConfigurationError(f"{where}: {name} must be an int >= {minimum}; got {value!r}")
    result = int(value)
    if result < minimum:
        raise ConfigurationError(f"{where}: {name} must be an int >= {minimum}; got {result}")
    return result


def check_positive_float(
    value: object, name: str, where: str, *, allow_zero: bool = False
) -> float:
    """A finite real number (ints accepted) that is > 0 (>= 0 with ``allow_zero``)."""
    sign = ">= 0" if allow_zero else "> 0"
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise ConfigurationError(f"{where}: {name} must be a finite number {sign}; got {value!r}")
    x = float(value)
    if not math.isfinite(x) or x < 0 or (x == 0 and not allow_zero):
        raise ConfigurationError(f"{where}: {name} must be a finite number {sign}; got {value!r}")
    return x


def check_fraction(value: object, name: str, where: str) -> float:
    """A real number strictly between 0 and 1."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise ConfigurationError(f"{where}: {name} must be a number in (0, 1); got {value!r}")
    x = float(value)
    if not 0.0 < x < 1.0:
        raise ConfigurationError(f"{where}: {name} must be a number in (0, 1); got {value!r}")
    return x


def check_bool(value: object, name: str, where: str) -> bool:
    """``True`` or ``False`` (numpy bools accepted)."""
    if not isinstance(value, bool | np.bool_):
        raise ConfigurationError(f"{where}: {name} must be True or False; got {value!r}")
    return bool(value)


def check_choice(value: object, name: str, where: str, choices: Sequence[str]) -> str:
    """``value`` must be one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        accepted = ", ".join(repr(c) for c in choices)
        raise ConfigurationError(f"{where}: {name} must be one of {accepted}; got {value!r}")
    return value
