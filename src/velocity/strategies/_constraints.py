"""Declarative parameter constraints and the one validation routine that reads them.

Every stage class lists its settings in a ``_constraints`` class attribute, a mapping from
field name to one of the constraint objects below (the shape of scikit-learn's
``_parameter_constraints``). :func:`check_parameters` is called from ``__post_init__`` and is
the only place that turns a bad value into an error, always through :data:`ERROR_TEMPLATE`::

    Krum.f must be an int >= 0; got -1

Data-dependent limits (``n > 2f + 2`` and friends) are not checked here: they depend on the
round and are the kernels' job when they are called.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any, Final, Literal, Protocol, TypeAlias, get_args

from velocity.errors import ConfigurationError

__all__ = [
    "BYZANTINE",
    "ERROR_TEMPLATE",
    "INIT",
    "INVALID",
    "MAX_SUBSETS",
    "NEIGHBORS",
    "NONFINITE",
    "Constraint",
    "Init",
    "Integer",
    "Neighbors",
    "NoneOr",
    "Nonfinite",
    "OneOf",
    "Real",
    "check_parameters",
    "constraints_of",
]

ERROR_TEMPLATE: Final = "{owner}.{name} must be {expected}; got {value!r}"


class _Invalid:
    """Marker returned by :meth:`Constraint.convert` for a rejected value."""


INVALID: Final = _Invalid()


class Constraint(Protocol):
    """What a parameter accepts: a phrase for messages and a converter."""

    def describe(self) -> str:
        """The accepted values as a noun phrase: ``"an int >= 0"``."""
        ...

    def convert(self, value: object) -> object:
        """The value to store, or :data:`INVALID` if ``value`` is not accepted."""
        ...


def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return ""


def _within(
    value: float, low: float | None, high: float | None, low_open: bool, high_open: bool
) -> bool:
    if low is not None and (value <= low if low_open else value < low):
        return False
    return not (high is not None and (value >= high if high_open else value > high))


@dataclasses.dataclass(frozen=True)
class Integer:
    """An ``int`` (not a ``bool``, not a float) within closed bounds."""

    low: int | None = None
    high: int | None = None

    def describe(self) -> str:
        return f"an int {_bounds(self.low, self.high, False, False)}".rstrip()

    def convert(self, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            return INVALID
        result = int(value)
        return result if _within(result, self.low, self.high, False, False) else INVALID


@dataclasses.dataclass(frozen=True)
class Real:
    """A finite real number, stored as ``float``; an ``int`` is accepted (YAML writes ``1``)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        bounds = _bounds(self.low, self.high, self.low_open, self.high_open)
        return f"a finite float {bounds}".rstrip()

    def convert(self, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return INVALID
        result = float(value)
        if not math.isfinite(result):
            return INVALID
        within = _within(result, self.low, self.high, self.low_open, self.high_open)
        return result if within else INVALID


@dataclasses.dataclass(frozen=True, init=False)
class OneOf:
    """One of a fixed set of strings, compared exactly."""

    options: tuple[str, ...]

    def __init__(self, *options: str) -> None:
        object.__setattr__(self, "options", options)

    def describe(self) -> str:
        return "one of " + ", ".join(repr(option) for option in self.options)

    def convert(self, value: object) -> object:
        return value if isinstance(value, str) and value in self.options else INVALID


@dataclasses.dataclass(frozen=True)
class NoneOr:
    """``None`` or whatever ``inner`` accepts."""

    inner: Constraint

    def describe(self) -> str:
        return f"None or {self.inner.describe()}"

    def convert(self, value: object) -> object:
        return None if value is None else self.inner.convert(value)


def constraints_of(obj: object) -> Mapping[str, Constraint]:
    """The ``_constraints`` table of a stage instance or class."""
    table: Mapping[str, Constraint] = getattr(obj, "_constraints", {})
    return table


def check_parameters(instance: Any) -> None:
    """Validate and normalise every dataclass field of ``instance`` against its table.

    Accepted values are stored back in their canonical type (``1`` -> ``1.0`` for a float
    field), so equal settings give equal, equally hashed objects.

    Raises
    ------
    ConfigurationError
        For the first field whose value is not accepted, with :data:`ERROR_TEMPLATE`.
    """
    owner = type(instance).__name__
    table = constraints_of(instance)
    for field in dataclasses.fields(instance):
        constraint = table[field.name]
        value = getattr(instance, field.name)
        converted = constraint.convert(value)
        if converted is INVALID:
            raise ConfigurationError(
                ERROR_TEMPLATE.format(
                    owner=owner, name=field.name, expected=constraint.describe(), value=value
                )
            )
        object.__setattr__(instance, field.name, converted)


# Types and entries shared by several tables.
Neighbors: TypeAlias = Literal["n-f-2", "n-f-1"]
"""Krum's neighbourhood size: the paper's ``n - f - 2`` or ByzFL/ByzPy's ``n - f - 1``."""
Init: TypeAlias = Literal["mean", "median", "zero"]
"""Starting point of an iterative rule."""
Nonfinite: TypeAlias = Literal["drop", "propagate", "raise"]
"""What the mean does with rows holding NaN or ±inf."""

BYZANTINE: Final = Integer(low=0)
"""``f``: the number of Byzantine (arbitrarily faulty) clients the rule must tolerate."""
NEIGHBORS: Final = OneOf(*get_args(Neighbors))
INIT: Final = OneOf(*get_args(Init))
NONFINITE: Final = OneOf(*get_args(Nonfinite))
MAX_SUBSETS: Final = Integer(low=1)
"""Refuse an exact subset search over more than this many subsets."""
