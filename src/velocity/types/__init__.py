"""The data that moves through a federated round, and the seams of the round engine.

- :class:`ParamSpec` maps a model's state dict to ONE flat ``float32`` vector and back;
  :func:`tensor_digest` is the canonical SHA-256 of a flat tensor.
- :class:`ClientTask` out, :class:`ClientUpdate` or :class:`ClientFailure` back
  (:mod:`velocity.types._messages`); :func:`admit` is the one admission check.
- :class:`UpdateProvider`, :class:`Clock`, :class:`Stage`, :class:`StageContext` and
  :class:`ClientStateStore`: the interfaces the engine talks through.
- :class:`RoundResult`: one round, one record.
- :mod:`velocity.types.wire`-style framing (:func:`encode_update`, :func:`decode_update`,
  ...): tasks and updates as bytes (JSON header + safetensors), bounded and checked.
"""

from velocity.types._messages import (
    FAILURE_REASONS,
    ClientFailure,
    ClientTask,
    ClientUpdate,
    FailureReason,
    TaskConfig,
    admit,
)
from velocity.types._params import ParamSpec, tensor_digest
from velocity.types._result import RoundResult
from velocity.types._seams import (
    ClientSampler,
    ClientStateStore,
    Clock,
    Result,
    Stage,
    StageContext,
    StageState,
    UpdateEncoder,
    UpdateProvider,
    VirtualClock,
    WallClock,
)
from velocity.types._wire import (
    decode_delta,
    decode_task,
    decode_update,
    encode_delta,
    encode_task,
    encode_update,
)

__all__ = [
    "FAILURE_REASONS",
    "ClientFailure",
    "ClientSampler",
    "ClientStateStore",
    "ClientTask",
    "ClientUpdate",
    "Clock",
    "FailureReason",
    "ParamSpec",
    "Result",
    "RoundResult",
    "Stage",
    "StageContext",
    "StageState",
    "TaskConfig",
    "UpdateEncoder",
    "UpdateProvider",
    "VirtualClock",
    "WallClock",
    "admit",
    "decode_delta",
    "decode_task",
    "decode_update",
    "encode_delta",
    "encode_task",
    "encode_update",
    "tensor_digest",
]
