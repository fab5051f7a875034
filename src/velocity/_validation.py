"""Declarative parameter constraints and the one routine that turns a bad value into an error.

A bottom-layer module (it imports only :mod:`velocity.errors`): strategies, attacks, client
and server settings all validate through it, so every rejected setting reads the same,
through :data:`ERROR_TEMPLATE`::

    Krum.f must be an int >= 0; got -1

Two forms:

- a frozen dataclass lists its fields in a ``_constraints`` class attribute, a mapping from
  field name to a constraint (the shape of scikit-learn's ``_parameter_constraints``), and
  calls :func:`check_parameters` from ``__post_init__``;
- any other code (keyword arguments of a plain constructor, a method's argument) calls
  :func:`check_value` for one value at a time.

Both store or return the value in its canonical type (``1`` -> ``1.0`` for a float, a list
-> a tuple for :class:`TupleOf`). Rules that relate several values (``end_round >=
start_round``) and data-dependent limits (``n > 2f + 2``) stay explicit in their owners.

Examples
--------
>>> check_value("TrainConfig", "lr", 1, Real(low=0, low_open=True))
1.0
>>> check_value("Krum", "f", -1, Integer(low=0))
Traceback (most recent call last):
    ...
velocity.errors.ConfigurationError: Krum.f must be an int >= 0; got -1
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import reprlib
from collections.abc import Mapping
from typing import Any, Final, Protocol

from velocity.errors import ConfigurationError

__all__ = [
    "ERROR_TEMPLATE",
    "INVALID",
    "Boolean",
    "Constraint",
    "Described",
    "Integer",
    "MappingOf",
    "NoneOr",
    "OneOf",
    "Real",
    "String",
    "TupleOf",
    "check_parameters",
    "check_value",
    "constraints_of",
    "error_message",
    "short_repr",
]

ERROR_TEMPLATE: Final = "{owner}.{name} must be {expected}; got {value!r}"


class _Invalid:
    """Marker returned by :meth:`Constraint.convert` for a rejected value."""

    def __repr__(self) -> str:
        return "INVALID"


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
    """A finite real number, stored as ``float``; an ``int`` is accepted (YAML writes ``1``).

    A ``bool`` is refused. Bounds are closed unless ``low_open`` / ``high_open``.
    """

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


@dataclasses.dataclass(frozen=True)
class Boolean:
    """A real ``bool``: ``True`` or ``False`` (not ``0``/``1``, not ``"false"``)."""

    def describe(self) -> str:
        return "true or false"

    def convert(self, value: object) -> object:
        return value if isinstance(value, bool) else INVALID


@dataclasses.dataclass(frozen=True)
class String:
    """A ``str`` of at least ``min_length`` characters."""

    min_length: int = 0

    def describe(self) -> str:
        if self.min_length <= 0:
            return "a string"
        if self.min_length == 1:
            return "a non-empty string"
        return f"a string of at least {self.min_length} characters"

    def convert(self, value: object) -> object:
        return value if isinstance(value, str) and len(value) >= self.min_length else INVALID


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


@dataclasses.dataclass(frozen=True)
class TupleOf:
    """A ``list`` or ``tuple`` (not a string) of at least ``min_length`` items, stored as a tuple.

    Each item is converted by ``item`` (any item is kept as it is when ``item`` is ``None``).
    """

    item: Constraint | None = None
    min_length: int = 0

    def describe(self) -> str:
        if self.min_length <= 0:
            text = "a list or tuple"
        elif self.min_length == 1:
            text = "a non-empty list or tuple"
        else:
            text = f"a list or tuple of at least {self.min_length} items"
        return text if self.item is None else f"{text} whose items are each {self.item.describe()}"

    def convert(self, value: object) -> object:
        if not isinstance(value, list | tuple) or len(value) < self.min_length:
            return INVALID
        if self.item is None:
            return tuple(value)
        items = tuple(self.item.convert(v) for v in value)
        return INVALID if any(v is INVALID for v in items) else items


@dataclasses.dataclass(frozen=True)
class MappingOf:
    """A mapping of at least ``min_length`` entries, stored as a ``dict``.

    Keys and values are converted by ``key`` and ``value`` (kept as they are when ``None``).
    """

    key: Constraint | None = None
    value: Constraint | None = None
    min_length: int = 0

    def describe(self) -> str:
        text = "a non-empty mapping" if self.min_length == 1 else "a mapping"
        if self.min_length > 1:
            text = f"a mapping of at least {self.min_length} entries"
        parts = [
            f"{what} each {constraint.describe()}"
            for what, constraint in (("keys", self.key), ("values", self.value))
            if constraint is not None
        ]
        return f"{text} with {' and '.join(parts)}" if parts else text

    def convert(self, value: object) -> object:
        if not isinstance(value, Mapping) or len(value) < self.min_length:
            return INVALID
        out: dict[object, object] = {}
        for k, v in value.items():
            k2 = k if self.key is None else self.key.convert(k)
            v2 = v if self.value is None else self.value.convert(v)
            if k2 is INVALID or v2 is INVALID:
                return INVALID
            out[k2] = v2
        return out


@dataclasses.dataclass(frozen=True)
class Described:
    """What ``inner`` accepts, described by ``expected`` instead of ``inner``'s own phrase.

    For a message in the owner's terms: ``Described(Real(0, 1, low_open=True), "in (0, 1]")``
    reads ``... fraction must be in (0, 1]; got 1.5``.
    """

    inner: Constraint
    expected: str

    def describe(self) -> str:
        return self.expected

    def convert(self, value: object) -> object:
        return self.inner.convert(value)


def _bounded_repr() -> reprlib.Repr:
    short = reprlib.Repr()
    short.maxstring = short.maxother = 80
    short.maxlist = short.maxdict = short.maxtuple = short.maxset = 8
    short.maxlevel = 3
    return short


_REPR: Final = _bounded_repr()


def short_repr(value: object) -> str:
    """``repr(value)`` bounded (strings and other reprs to 80 characters, containers to 8
    items and 3 levels): an error message never prints a whole huge value."""
    text: str = _REPR.repr(value)
    return text


class _Short:
    """A value whose ``repr`` is :func:`short_repr`."""

    def __init__(self, value: object) -> None:
        self.value = value

    def __repr__(self) -> str:
        return short_repr(self.value)


def error_message(owner: str, name: str, value: object, constraint: Constraint) -> str:
    """:data:`ERROR_TEMPLATE` filled in for a rejected ``value`` (shown shortened)."""
    return ERROR_TEMPLATE.format(
        owner=owner, name=name, expected=constraint.describe(), value=_Short(value)
    )


def check_value(owner: str, name: str, value: object, constraint: Constraint) -> Any:
    """``value`` converted by ``constraint``, for validating one plain argument.

    Raises
    ------
    ConfigurationError
        If ``constraint`` does not accept ``value``, with :data:`ERROR_TEMPLATE`
        (``"{owner}.{name} must be {expected}; got {value!r}"``).
    """
    converted = constraint.convert(value)
    if converted is INVALID:
        raise ConfigurationError(error_message(owner, name, value, constraint))
    return converted


def constraints_of(obj: object) -> Mapping[str, Constraint]:
    """The ``_constraints`` table of an instance or class (empty when it has none)."""
    table: Mapping[str, Constraint] = getattr(obj, "_constraints", {})
    return table


def check_parameters(
    instance: Any, table: Mapping[str, Constraint] | None = None, *, owner: str | None = None
) -> None:
    """Validate and normalise the fields of a (frozen) dataclass ``instance`` in place.

    With no ``table``, every dataclass field is checked against the instance's
    ``_constraints`` (each field must have an entry); with one, exactly its entries are (the
    other fields are the caller's to check). ``owner`` names the instance in messages
    (default: its class name). Accepted values are stored back in their canonical type
    (``1`` -> ``1.0`` for a float field), so equal settings give equal, equally hashed
    objects.

    Raises
    ------
    ConfigurationError
        For the first field whose value is not accepted, with :data:`ERROR_TEMPLATE`.
    """
    owner = type(instance).__name__ if owner is None else owner
    if table is None:
        table = constraints_of(instance)
        names = [field.name for field in dataclasses.fields(instance)]
    else:
        names = list(table)
    for name in names:
        converted = check_value(owner, name, getattr(instance, name), table[name])
        object.__setattr__(instance, name, converted)
