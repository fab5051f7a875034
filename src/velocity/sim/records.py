"""What one simulated round leaves behind."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from velocity.types import _json_value

__all__ = ["RoundRecord"]


@dataclass(frozen=True)
class RoundRecord:
    """One round of a simulation: who took part, what it cost, how the model did.

    ``global_loss``/``global_accuracy`` are the global model's test metrics after the round
    (``None`` on rounds that were not evaluated); ``train_loss`` is the sample-weighted mean of
    the honest participants' local training losses; ``client_accuracy`` their local training
    accuracy (adversaries are reported in ``attack_results`` instead). Bytes are real
    serialized sizes (safetensors) of the broadcast model and of each uploaded update.
    ``attack_results`` holds one :meth:`velocity.attacks.AttackResult.to_dict` per attack
    active in the round.
    """

    round: int
    selected: tuple[str, ...]
    participated: tuple[str, ...]
    dropped: tuple[str, ...]
    stragglers: tuple[str, ...]
    global_loss: float | None
    global_accuracy: float | None
    train_loss: float | None
    client_accuracy: Mapping[str, float]
    bytes_up: int
    bytes_down: int
    duration_s: float
    aggregation: Mapping[str, Any] = field(default_factory=dict)
    attack_results: tuple[Mapping[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        def num(v: float | None) -> float | None:
            return None if v is None or not math.isfinite(v) else float(v)

        return {
            "round": self.round,
            "selected": list(self.selected),
            "participated": list(self.participated),
            "dropped": list(self.dropped),
            "stragglers": list(self.stragglers),
            "global_loss": num(self.global_loss),
            "global_accuracy": num(self.global_accuracy),
            "train_loss": num(self.train_loss),
            "client_accuracy": {k: float(v) for k, v in self.client_accuracy.items()},
            "bytes_up": int(self.bytes_up),
            "bytes_down": int(self.bytes_down),
            "duration_s": float(self.duration_s),
            "aggregation": _finite_or_none(_json_value(dict(self.aggregation))),
            "attack_results": [_finite_or_none(dict(a)) for a in self.attack_results],
        }


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN or infinity: such floats become ``None`` (null), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value
