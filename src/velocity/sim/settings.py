"""Round-level behaviour of a simulated federation, validated by the one constraint table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from velocity._validation import INVALID, Constraint, Integer, Real, check_parameters
from velocity.errors import ConfigurationError
from velocity.sim.sampling import DelayModel, StragglerModel

__all__ = ["SimulationSettings"]


class _Straggler:
    """A ``StragglerModel`` or ``None`` (the table's form for an object-valued field)."""

    def describe(self) -> str:
        return "None or a StragglerModel"

    def convert(self, value: object) -> object:
        return value if value is None or isinstance(value, StragglerModel) else INVALID


class _Delays:
    """``None`` or an object with a ``delay(client, *, seed, round_)`` method."""

    def describe(self) -> str:
        return "None or a delay model (UniformDelay, ClientSpeeds, ...)"

    def convert(self, value: object) -> object:
        return value if value is None or callable(getattr(value, "delay", None)) else INVALID


@dataclass(frozen=True)
class SimulationSettings:
    """Round-level behaviour of a simulation (see ``docs/configuration.md``).

    ``straggler`` draws client delays and sets the synchronous round's deadline; ``delays``
    draws them without a deadline (asynchronous FL, deadline-free synchronous rounds).

    >>> SimulationSettings(seed=0, client_fraction=0)
    Traceback (most recent call last):
        ...
    velocity.errors.ConfigurationError: SimulationSettings.client_fraction must be a finite float in (0, 1]; got 0
    """  # noqa: E501

    seed: int
    client_fraction: float = 1.0
    min_clients: int = 1
    dropout_rate: float = 0.0
    straggler: StragglerModel | None = None
    eval_every: int = 1
    delays: DelayModel | None = None

    _constraints: ClassVar[Mapping[str, Constraint]] = {
        "seed": Integer(),
        "client_fraction": Real(low=0, high=1, low_open=True),
        "min_clients": Integer(low=1),
        "dropout_rate": Real(low=0, high=1, high_open=True),
        "straggler": _Straggler(),
        "eval_every": Integer(low=1),
        "delays": _Delays(),
    }

    def __post_init__(self) -> None:
        check_parameters(self)
        if self.straggler is not None and self.delays is not None:
            raise ConfigurationError(
                "SimulationSettings: give straggler (delays with a round deadline) or delays "
                "(no deadline), not both"
            )

    @property
    def delay_model(self) -> DelayModel | None:
        """The clients' delays: the straggler model's, else :attr:`delays`."""
        return self.straggler if self.straggler is not None else self.delays
