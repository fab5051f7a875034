"""The attack catalogue by name, ``parse_attack`` and its inverse."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, Final

from velocity.attacks._base import Attack
from velocity.attacks._data import Backdoor, LabelFlip, LabelFlipping
from velocity.attacks._update import (
    Empire,
    Gaussian,
    GaussianNoise,
    Inf,
    Little,
    Mimic,
    MinMax,
    MinSum,
    ModelPoisoning,
    SignFlip,
    SybilNodes,
)
from velocity.errors import ConfigurationError
from velocity.strategies._constraints import constraints_of

__all__ = [
    "ATTACKS",
    "VALID_ATTACKS",
    "attack_to_dict",
    "describe_attacks",
    "parse_attack",
]

VALID_ATTACKS: Final[frozenset[str]] = frozenset(
    {"model_poisoning", "sybil_nodes", "gaussian_noise", "label_flipping"}
)
"""The four attack identifiers of VelocityFL's API (the whole catalogue is :data:`ATTACKS`)."""

ATTACKS: Final[Mapping[str, type[Attack]]] = {
    cls.name: cls
    for cls in (
        ModelPoisoning,
        SybilNodes,
        GaussianNoise,
        LabelFlipping,
        Empire,
        Little,
        SignFlip,
        Gaussian,
        Inf,
        Mimic,
        LabelFlip,
        Backdoor,
        MinMax,
        MinSum,
    )
}
"""Every attack by name: the VelocityFL four, the ByzPy seven, backdoor, min-max, min-sum."""


def _key(name: str) -> str:
    return re.sub(r"[\s_-]", "", name).casefold()


_BY_KEY: Final[dict[str, type[Attack]]] = {
    **{_key(name): cls for name, cls in ATTACKS.items()},
    **{_key(cls.__name__): cls for cls in ATTACKS.values()},
    # ByzPy's class names
    "empireattack": Empire,
    "littleattack": Little,
    "signflipattack": SignFlip,
    "gaussianattack": Gaussian,
    "infattack": Inf,
    "mimicattack": Mimic,
    "labelflipattack": LabelFlip,
}


def _valid_names() -> str:
    return ", ".join(ATTACKS)


def attack_class(name: object) -> type[Attack]:
    """The class of attack ``name`` (spelling-insensitive; ByzPy class names work too)."""
    cls = _BY_KEY.get(_key(name)) if isinstance(name, str) else None
    if cls is None:
        raise ConfigurationError(f"unknown attack {name!r}; valid attacks: {_valid_names()}")
    return cls


def parse_attack(spec: str | Mapping[str, Any] | Attack) -> Attack:
    """An attack from its name or ``{"type": name, **params}``.

    >>> parse_attack({"type": "little", "f": 2})
    Little(f=2, N=None)
    >>> parse_attack("SignFlipAttack")
    SignFlip(scale=-1.0)
    """
    if isinstance(spec, Attack):
        return spec
    if isinstance(spec, str):
        return attack_class(spec)()
    if not isinstance(spec, Mapping):
        raise ConfigurationError(
            f"an attack is a name or a mapping with 'type'; got {spec!r}; "
            f"valid attacks: {_valid_names()}"
        )
    if "type" not in spec:
        raise ConfigurationError(f"attack {dict(spec)!r} has no 'type'; valid: {_valid_names()}")
    cls = attack_class(spec["type"])
    params = {k: v for k, v in spec.items() if k != "type"}
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in params:
        if key not in valid:
            raise ConfigurationError(
                f"attack {cls.name} has no parameter {key!r}; valid parameters of {cls.name}: "
                f"{', '.join(valid) or '(none)'}"
            )
    return cls(**params)


def attack_to_dict(attack: Attack) -> dict[str, Any]:
    """Inverse of :func:`parse_attack`: ``{"type": name, **params}``."""
    params = {f.name: getattr(attack, f.name) for f in dataclasses.fields(attack)}
    return {"type": attack.name, **params}


def describe_attacks() -> list[dict[str, Any]]:
    """One entry per attack: name, kind, what it needs, summary line and parameters."""
    out = []
    for name, cls in ATTACKS.items():
        table = constraints_of(cls)
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        out.append(
            {
                "name": name,
                "class": cls.__name__,
                "kind": cls.kind,
                "omniscient": cls.needs_honest,
                "summary": doc,
                "parameters": [
                    {
                        "name": f.name,
                        "default": f.default,
                        "accepts": table[f.name].describe(),
                    }
                    for f in dataclasses.fields(cls)
                ],
            }
        )
    return out
