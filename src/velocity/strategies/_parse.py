"""``parse_strategy`` (str / dict / list -> strategy) and its inverse ``to_dict``."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, cast

from velocity.errors import ConfigurationError
from velocity.strategies._averaging import FedAvg
from velocity.strategies._base import Aggregator, Stage
from velocity.strategies._constraints import constraints_of
from velocity.strategies._coordinatewise import FedMedian
from velocity.strategies._pipeline import Pipeline
from velocity.strategies._registry import (
    ALL_STRATEGIES,
    PRE_AGGREGATORS,
    SERVER_OPTIMIZERS,
    STAGE_CLASSES,
    Strategy,
)

__all__ = ["parse_strategy", "to_dict"]

Spec = str | Mapping[str, Any] | Sequence[Any] | Strategy
"""What :func:`parse_strategy` accepts."""


def _key(name: str) -> str:
    """Spelling-insensitive key: ``"multi_krum"``, ``"Multi-Krum"``, ``"MultiKrum"`` agree."""
    return re.sub(r"[\s_-]", "", name).casefold()


_ALIASES: Final[dict[str, type[Stage]]] = {"mean": FedAvg, "median": FedMedian}
"""Kernel names that differ from the class name."""

_BY_KEY: Final[dict[str, type[Stage] | type[Pipeline]]] = {
    **{_key(cls.__name__): cls for cls in STAGE_CLASSES},
    **_ALIASES,
    "pipeline": Pipeline,
}


def _names(classes: Sequence[type]) -> str:
    return ", ".join(cls.__name__ for cls in classes)


_VALID_TYPES: Final = (
    f"aggregators: {_names(ALL_STRATEGIES)}; "
    f"pre-aggregators (inside a Pipeline): {_names(PRE_AGGREGATORS)}; "
    f"server optimizers (inside a Pipeline): {_names(SERVER_OPTIMIZERS)}; "
    "and Pipeline (names are case-insensitive; snake_case works too, e.g. 'multi_krum')"
)


def _resolve(name: object) -> type[Stage] | type[Pipeline]:
    cls = _BY_KEY.get(_key(name)) if isinstance(name, str) else None
    if cls is None:
        raise ConfigurationError(f"unknown strategy type {name!r}; valid types are {_VALID_TYPES}")
    return cls


def _build(cls: type[Stage], params: Mapping[Any, Any], spec: object) -> Stage:
    fields = dataclasses.fields(cls)
    valid = [field.name for field in fields]
    for key in params:
        if key not in valid:
            raise ConfigurationError(
                f"{cls.__name__} has no parameter {key!r}; valid parameters of {cls.__name__}: "
                f"{', '.join(valid) or '(none)'}"
            )
    missing = [
        field.name
        for field in fields
        if field.default is dataclasses.MISSING and field.name not in params
    ]
    if missing:
        table = constraints_of(cls)
        needed = ", ".join(f"{name} ({table[name].describe()})" for name in missing)
        example = ", ".join(f"{name!r}: ..." for name in missing)
        raise ConfigurationError(
            f"{cls.__name__} requires parameter(s) {needed}; write "
            f"{{'type': {cls.__name__!r}, {example}}}; got {spec!r}"
        )
    return cls(**params)


def _pipeline(stages: object, spec: object) -> Pipeline:
    if isinstance(stages, str | bytes) or not isinstance(stages, Sequence):
        raise ConfigurationError(
            f"Pipeline stages must be a list of stage specs (names or dicts); got {spec!r}"
        )
    return Pipeline(*(_parse_stage(stage) for stage in stages))


def _parse_stage(spec: object) -> Stage:
    """One stage of any kind from a name, a dict or an instance."""
    if isinstance(spec, Stage):
        return spec
    if isinstance(spec, Pipeline):
        raise ConfigurationError(
            f"a Pipeline stage cannot be a Pipeline; list its stages instead; got {spec!r}"
        )
    if isinstance(spec, str):
        cls = _resolve(spec)
        params: Mapping[Any, Any] = {}
    elif isinstance(spec, Mapping):
        if "type" not in spec:
            raise ConfigurationError(
                f"a strategy dict needs a 'type' key; valid types are {_VALID_TYPES}; got {spec!r}"
            )
        cls = _resolve(spec["type"])
        params = {key: value for key, value in spec.items() if key != "type"}
    else:
        raise ConfigurationError(
            "a strategy spec must be a name (str), a dict with a 'type' key, a list of stage "
            f"specs, or a strategy object; got {spec!r} ({type(spec).__name__})"
        )
    if issubclass(cls, Pipeline):
        raise ConfigurationError(
            f"a Pipeline stage cannot be a Pipeline; list its stages instead; got {spec!r}"
        )
    return _build(cls, params, spec)


def parse_strategy(spec: Spec) -> Strategy:
    """Build a strategy from its name, its dict form, a list of stages, or return it as is.

    Parameters
    ----------
    spec : str, dict, list or Strategy
        ``"FedAvg"`` (only for classes without required parameters); ``{"type": "Krum",
        "f": 2}``; ``{"type": "Pipeline", "stages": [...]}`` or just the list of stages, each
        a name or a dict. Type names are case-insensitive and may be written in snake_case
        (``"multi_krum"``).

    Raises
    ------
    ConfigurationError
        Unknown type (the message lists the valid ones), unknown parameter (lists the valid
        parameters of that type), missing required parameter, value out of range, or a
        pipeline in the wrong order.

    Examples
    --------
    >>> from velocity.strategies import FedAvg, FedProx, Krum, MultiKrum, Clip, Pipeline
    >>> parse_strategy("FedAvg") == FedAvg()
    True
    >>> parse_strategy("FedProx") == FedProx()
    True
    >>> parse_strategy({"type": "Krum", "f": 2}) == Krum(f=2)
    True
    >>> parse_strategy({"type": "MultiKrum", "f": 1}) == MultiKrum(f=1, m=None)
    True
    >>> parse_strategy(["clip", {"type": "krum", "f": 1}]) == Pipeline(Clip(), Krum(f=1))
    True
    """
    if isinstance(spec, Aggregator | Pipeline):
        return spec
    if isinstance(spec, Mapping) and "type" in spec and _resolve(spec["type"]) is Pipeline:
        extra = [key for key in spec if key not in ("type", "stages")]
        if extra or "stages" not in spec:
            raise ConfigurationError(
                "a Pipeline dict has exactly the keys 'type' and 'stages' (a list of stage "
                f"specs); got {spec!r}"
            )
        return _pipeline(spec["stages"], spec)
    if isinstance(spec, str) and _resolve(spec) is Pipeline:
        raise ConfigurationError(
            "Pipeline requires parameter stages; write {'type': 'Pipeline', 'stages': [...]} "
            "or give the list of stages"
        )
    if isinstance(spec, Sequence) and not isinstance(spec, str | bytes):
        return _pipeline(spec, spec)
    stage = _parse_stage(spec)
    if not isinstance(stage, Aggregator):
        # A server optimizer goes after the aggregator, a pre-aggregator before it.
        shown = to_dict(stage)
        stages = ["FedAvg", shown] if stage.kind == "server-optimizer" else [shown, "FedAvg"]
        raise ConfigurationError(
            f"{type(stage).__name__} is a {stage.kind}, not an aggregator; use it inside a "
            f"Pipeline with an aggregator, e.g. {{'type': 'Pipeline', 'stages': {stages!r}}}"
        )
    return cast("Strategy", stage)


def to_dict(strategy: Strategy | Stage) -> dict[str, Any]:
    """The dict form of a strategy or stage, with every parameter; ``parse_strategy`` inverts it.

    Examples
    --------
    >>> from velocity.strategies import Clip, Krum, Pipeline
    >>> to_dict(Krum(f=2))
    {'type': 'Krum', 'f': 2, 'neighbors': 'n-f-2'}
    >>> to_dict(Pipeline(Clip(), Krum(f=2)))["stages"]
    [{'type': 'Clip', 'threshold': 2.0}, {'type': 'Krum', 'f': 2, 'neighbors': 'n-f-2'}]
    """
    if isinstance(strategy, Pipeline):
        return {"type": "Pipeline", "stages": [to_dict(stage) for stage in strategy.stages]}
    if isinstance(strategy, Stage):
        fields = {f.name: getattr(strategy, f.name) for f in dataclasses.fields(strategy)}
        return {"type": type(strategy).__name__, **fields}
    raise ConfigurationError(
        f"to_dict expects a strategy or a stage; got {strategy!r} ({type(strategy).__name__})"
    )
