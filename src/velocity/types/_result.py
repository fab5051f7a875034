"""One round's result: the one record that history, metrics.json, checkpoints and
``VelocityServer.run()`` all come from."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from velocity.errors import ValidationError
from velocity.types._messages import ClientFailure
from velocity.types._params import _json_value

__all__ = ["RoundResult"]


@dataclass(frozen=True)
class RoundResult:
    """What happened in one round, in one record.

    Attributes
    ----------
    round : int
        The round number (``1, 2, ...``); also the model version after it.
    selected_client_ids : tuple of str
        Clients a task was sent to, in task order.
    participated : tuple of str
        Ids whose rows were aggregated, in row order (simulated Sybil identities included).
    failures : tuple of ClientFailure
        Clients that did not contribute and why (``dropped``, ``timed_out``,
        ``rejected``, ``stale``, ``error``); :attr:`dropped`, :attr:`stragglers` and
        :attr:`rejected` list them by reason.
    global_loss : float or None
        **The one meaning:** the global model's evaluation loss after the round (test split;
        the quadratic objective for ``layer_shapes`` servers); ``None`` on rounds that were
        not evaluated. Training losses are :attr:`train_loss`.
    global_accuracy : float or None
        The global model's evaluation accuracy after the round, when evaluated.
    train_loss : float or None
        Sample-weighted mean of the local training losses the (honest) participants
        reported; ``None`` when none reported one.
    client_accuracy : mapping of str to float
        Local training accuracy each honest participant reported.
    samples : mapping of str to int
        The sample count each aggregated row carried (its weight), by participant id.
    bytes_up, bytes_down : int
        Serialized (safetensors) bytes uploaded by the participants and broadcast to the
        selected clients.
    duration_s : float
        Wall-clock seconds of the round.
    clock_s : float
        The engine clock when the round aggregated (virtual seconds in simulation).
    aggregation : mapping
        The strategy's metrics (``rule``, ``n``, ``n_aggregated``, ``dropped_nonfinite``,
        ``dropped_nonfinite_clients``, ``total_samples``, ``server_optimizer``), or
        ``{"skipped": reason}`` when no update was aggregated.
    stages : mapping of str to mapping
        Metrics of the other server stages, by stage name.
    attack_results : tuple of mapping
        One :meth:`velocity.attacks.AttackResult.to_dict` per simulated attack of the round.
    """

    round: int
    selected_client_ids: tuple[str, ...]
    participated: tuple[str, ...]
    failures: tuple[ClientFailure, ...] = ()
    global_loss: float | None = None
    global_accuracy: float | None = None
    train_loss: float | None = None
    client_accuracy: Mapping[str, float] = field(default_factory=dict)
    samples: Mapping[str, int] = field(default_factory=dict)
    bytes_up: int = 0
    bytes_down: int = 0
    duration_s: float = 0.0
    clock_s: float = 0.0
    aggregation: Mapping[str, Any] = field(default_factory=dict)
    stages: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    attack_results: tuple[Mapping[str, Any], ...] = ()

    def _with_reason(self, reason: str) -> tuple[str, ...]:
        return tuple(f.client_id for f in self.failures if f.reason == reason)

    @property
    def num_clients(self) -> int:
        """Rows aggregated this round (``len(participated)``)."""
        return len(self.participated)

    @property
    def selected(self) -> tuple[str, ...]:
        """Alias of :attr:`selected_client_ids`."""
        return self.selected_client_ids

    @property
    def dropped(self) -> tuple[str, ...]:
        return self._with_reason("dropped")

    @property
    def stragglers(self) -> tuple[str, ...]:
        """Clients that missed the round's deadline (``timed_out``)."""
        return self._with_reason("timed_out")

    @property
    def rejected(self) -> tuple[str, ...]:
        """Clients whose update the engine refused (digest, shape, version, duplicate)."""
        return self._with_reason("rejected")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (non-finite floats become ``None``).

        Keys: ``round``, ``num_clients``, ``global_loss``, ``attack_results``,
        ``selected_client_ids`` (the seed's ``VelocityServer.run()`` keys), then
        ``global_accuracy``, ``train_loss``, ``participated``, ``dropped``, ``stragglers``,
        ``rejected``, ``failures``, ``client_accuracy``, ``samples``, ``bytes_up``, ``bytes_down``,
        ``duration_s``, ``clock_s``, ``aggregation``, ``stages``.
        """

        def num(v: float | None) -> float | None:
            return None if v is None or not math.isfinite(v) else float(v)

        return {
            "round": self.round,
            "num_clients": self.num_clients,
            "global_loss": num(self.global_loss),
            "attack_results": [_finite_or_none(dict(a)) for a in self.attack_results],
            "selected_client_ids": list(self.selected_client_ids),
            "global_accuracy": num(self.global_accuracy),
            "train_loss": num(self.train_loss),
            "participated": list(self.participated),
            "dropped": list(self.dropped),
            "stragglers": list(self.stragglers),
            "rejected": list(self.rejected),
            "failures": [f.to_dict() for f in self.failures],
            "client_accuracy": {k: float(v) for k, v in self.client_accuracy.items()},
            "samples": {k: int(v) for k, v in self.samples.items()},
            "bytes_up": int(self.bytes_up),
            "bytes_down": int(self.bytes_down),
            "duration_s": float(self.duration_s),
            "clock_s": float(self.clock_s),
            "aggregation": _finite_or_none(_json_value(dict(self.aggregation))),
            "stages": _finite_or_none(_json_value({k: dict(v) for k, v in self.stages.items()})),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RoundResult:
        """Inverse of :meth:`to_dict` (for checkpoints); derived keys are ignored."""
        try:
            return cls(
                round=int(d["round"]),
                selected_client_ids=tuple(d["selected_client_ids"]),
                participated=tuple(d["participated"]),
                failures=tuple(ClientFailure.from_dict(f) for f in d.get("failures", ())),
                global_loss=d.get("global_loss"),
                global_accuracy=d.get("global_accuracy"),
                train_loss=d.get("train_loss"),
                client_accuracy=dict(d.get("client_accuracy", {})),
                samples={str(k): int(v) for k, v in dict(d.get("samples", {})).items()},
                bytes_up=int(d.get("bytes_up", 0)),
                bytes_down=int(d.get("bytes_down", 0)),
                duration_s=float(d.get("duration_s", 0.0)),
                clock_s=float(d.get("clock_s", 0.0)),
                aggregation=dict(d.get("aggregation", {})),
                stages={k: dict(v) for k, v in dict(d.get("stages", {})).items()},
                attack_results=tuple(dict(a) for a in d.get("attack_results", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError(f"RoundResult.from_dict: malformed record ({exc})") from exc


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN or infinity: such floats become ``None`` (null), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value
