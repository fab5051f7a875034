"""The attack catalogue by name, ``parse_attack`` and its inverse."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, Final

from velocity._validation import constraints_of
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


_SUMMARIES: Final[Mapping[str, str]] = {
    "model_poisoning": "boosted reversed update: -boost * own update (Bhagoji et al. 2019)",
    "sybil_nodes": "count extra identities, all sending -scale * honest mean (Fung et al. 2020)",
    "gaussian_noise": "own update + N(0, sigma^2) noise",
    "label_flipping": "a share rate of the client's labels flipped to C-1-y, then honest training",
    "empire": "scale * honest mean: inner-product manipulation (Xie et al. 2020)",
    "little": "honest mean + z_max * honest std: A Little Is Enough (Baruch et al. 2019)",
    "sign_flip": "scale * own update (sign flipping)",
    "gaussian": "pure noise: every coordinate N(mu, sigma^2)",
    "inf": "+inf in every coordinate",
    "mimic": "a copy of honest client epsilon's update (Karimireddy et al. 2022)",
    "label_flip": "scale * update trained on all labels flipped (ByzPy LabelFlip)",
    "backdoor": "pixel-trigger backdoor to label target, update * boost (Gu et al. 2017)",
    "min_max": "mean + gamma * p, largest gamma within the honest max distance (Shejwalkar 2021)",
    "min_sum": "mean + gamma * p, largest gamma within the honest sum of sq. distances (idem)",
}


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
    Little(f=2, N=None, z=None)
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
        out.append(
            {
                "name": name,
                "class": cls.__name__,
                "kind": cls.kind,
                "omniscient": cls.needs_honest,
                "summary": _SUMMARIES[name],
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
