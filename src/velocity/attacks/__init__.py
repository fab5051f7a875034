"""Adversaries: every attack of VelocityFL and ByzPy, plus backdoor and min-max/min-sum.

An attack is a small frozen dataclass (parameters on the instance, validated on
construction). *Update* attacks craft their clients' updates from an
:class:`AttackContext` (the round's honest updates, their own honest update, a derived
generator); *data* attacks poison their clients' local data before honest training. The
round loop (:class:`velocity.server.Simulation`) applies them as an :class:`AttackPlan` says
and reports an :class:`AttackResult` per attack per round. See ``docs/robustness.md``.
"""

from velocity.attacks._base import (
    Attack,
    AttackContext,
    AttackResult,
    DataAttack,
    UpdateAttack,
)
from velocity.attacks._data import Backdoor, LabelFlip, LabelFlipping, reverse_labels
from velocity.attacks._plan import Assignment, AttackPlan, AttackSpec
from velocity.attacks._registry import (
    ATTACKS,
    VALID_ATTACKS,
    attack_class,
    attack_to_dict,
    describe_attacks,
    parse_attack,
)
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

__all__ = [
    "ATTACKS",
    "VALID_ATTACKS",
    "Assignment",
    "Attack",
    "AttackContext",
    "AttackPlan",
    "AttackResult",
    "AttackSpec",
    "Backdoor",
    "DataAttack",
    "Empire",
    "Gaussian",
    "GaussianNoise",
    "Inf",
    "LabelFlip",
    "LabelFlipping",
    "Little",
    "Mimic",
    "MinMax",
    "MinSum",
    "ModelPoisoning",
    "SignFlip",
    "SybilNodes",
    "UpdateAttack",
    "attack_class",
    "attack_to_dict",
    "describe_attacks",
    "parse_attack",
    "reverse_labels",
]
