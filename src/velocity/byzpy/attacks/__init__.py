"""ByzPy's attacks on :mod:`velocity.attacks`."""

from velocity.byzpy.attacks.base import Attack
from velocity.byzpy.attacks.empire import EmpireAttack
from velocity.byzpy.attacks.gaussian import GaussianAttack
from velocity.byzpy.attacks.inf import InfAttack
from velocity.byzpy.attacks.label_flip import LabelFlipAttack
from velocity.byzpy.attacks.little import LittleAttack
from velocity.byzpy.attacks.mimic import MimicAttack
from velocity.byzpy.attacks.sign_flip import SignFlipAttack

__all__ = [
    "Attack",
    "EmpireAttack",
    "GaussianAttack",
    "InfAttack",
    "LabelFlipAttack",
    "LittleAttack",
    "MimicAttack",
    "SignFlipAttack",
]
