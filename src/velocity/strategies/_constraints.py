"""The strategies' parameter constraints: the shared machinery plus the entries stages share.

The constraint classes, :data:`ERROR_TEMPLATE` and :func:`check_parameters` live in the
bottom-layer :mod:`velocity._validation` (attacks, client and server settings use them too)
and are re-exported here, so ``from velocity.strategies._constraints import Integer`` keeps
working. Every stage class lists its settings in a ``_constraints`` class attribute and calls
:func:`check_parameters` from ``__post_init__``::

    Krum.f must be an int >= 0; got -1

Data-dependent limits (``n > 2f + 2`` and friends) are not checked here: they depend on the
round and are the kernels' job when they are called.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias, get_args

from velocity._validation import (
    ERROR_TEMPLATE,
    INVALID,
    Boolean,
    Constraint,
    Described,
    Integer,
    MappingOf,
    NoneOr,
    OneOf,
    Real,
    String,
    TupleOf,
    check_parameters,
    check_value,
    constraints_of,
    error_message,
    short_repr,
)

__all__ = [
    "BYZANTINE",
    "ERROR_TEMPLATE",
    "INIT",
    "INVALID",
    "MAX_SUBSETS",
    "NEIGHBORS",
    "NONFINITE",
    "Boolean",
    "Constraint",
    "Described",
    "Init",
    "Integer",
    "MappingOf",
    "Neighbors",
    "NoneOr",
    "Nonfinite",
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
